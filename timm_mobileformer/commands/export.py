"""`timm-mobileformer export`: an ONNX file, a torch.export program or an ExecuTorch program, checked before it is
kept."""
import argparse
from pathlib import Path

import timm
import torch.nn as nn
from timm.data import resolve_data_config

from ..deploy.executorch import QUANTIZE, calibration_images, image_files
from ..deploy.export import FORMATS, check_export_format, export_to
from ..deploy.program import MAX_SIZE, MIN_SIZE
from ..errors import MobileFormerError
from ..hub import WeightsUnreachableError
from ..outputs import check_output
from ..weights import create_from_checkpoint
from ._common import add_img_size_argument, add_model_argument, add_output_argument, checkpoint_file, int_in

COMMAND = 'export'
HELP = ('Export a Mobile-Former to ONNX or a torch.export program (dynamic batch and image size), or to an '
        'ExecuTorch program for phones (XNNPACK, fp32 or int8), checked against PyTorch before it is kept.')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help='Mobile-Former variant, e.g. 294m or mobileformer_294m (default: detected '
                                    'from --checkpoint; required without it)')
    add_output_argument(parser, 'FILE', 'the file to write: .onnx for ONNX, .pt2 for a torch.export program, .pte '
                                        'for an ExecuTorch program (XNNPACK)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--checkpoint', metavar='FILE',
                         help="local weights: the authors' .pth.tar, a train.py checkpoint, a model.safetensors or a "
                              'folder made by convert (default: random weights, unless --pretrained)')
    weights.add_argument('--pretrained', action='store_true', help='export the Hub weights of --model')
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help='with a checkpoint that holds EMA weights, export the plain weights instead '
                             '(default: the EMA weights, as timm does)')
    add_img_size_argument(parser, 224, 'side of the example input (the graph takes any side in range; a .pte takes '
                                       'this side only)', MIN_SIZE, MAX_SIZE)
    parser.add_argument('--opset', type=int_in(7, 30, 'an ONNX opset'), default=None, metavar='N',
                        help='ONNX opset (default: 23, where the Former\'s attention is one Attention node; '
                             'lower opsets export it as plain ops)')
    parser.add_argument('--fixed-size', action='store_true',
                        help='ONNX with only the batch dynamic: height and width fixed at --img-size (default: '
                             'dynamic height and width)')
    parser.add_argument('--save-optimized', metavar='FILE', default=None,
                        help="also write ONNX Runtime's optimized model (ORT_ENABLE_ALL, CPU provider) to FILE, "
                             'for sessions on machines like this one (default: none)')
    parser.add_argument('--batch-size', type=int_in(1, 1024, 'a batch size'), default=None, metavar='N',
                        help='the fixed batch of a .pte (default 1); or fix the batch of the --save-optimized file '
                             'at N: ONNX Runtime then runs the dynamic ReLUs in its blocked conv layout, the fastest '
                             'form here (with --fixed-size too); the .onnx file keeps its dynamic batch (default: '
                             '1 for a .pte, else the batch stays dynamic)')
    parser.add_argument('--quantize', choices=QUANTIZE, default=None,
                        help='a .pte in int8 (static, XNNPACK quantizer, per-channel weights), calibrated on '
                             '--calibration (default: fp32)')
    parser.add_argument('--calibration', metavar='DIR', default=None,
                        help='with --quantize: a folder of images like those the model will see, read with the '
                             "model's own preprocessing (the first 32; e.g. a folder made by demo-data)")
    parser.add_argument('--no-check', action='store_true',
                        help='skip the ONNX Runtime comparison (a .pt2 is always checked)')


def run(args: argparse.Namespace) -> int:
    out = check_output(args.out, suffixes=tuple(FORMATS), inputs=[args.checkpoint], overwrite=args.overwrite)
    check_export_format(out)
    if (args.quantize or args.calibration) and out.suffix != '.pte':
        raise MobileFormerError('--quantize and --calibration apply to .pte files only')
    if bool(args.quantize) != bool(args.calibration):
        raise MobileFormerError('--quantize int8 and --calibration DIR go together: int8 is calibrated on images')
    if args.batch_size and not args.save_optimized and out.suffix != '.pte':
        raise MobileFormerError('--batch-size fixes the batch of the --save-optimized file: add --save-optimized FILE')
    if args.calibration and not image_files(Path(args.calibration)):
        raise MobileFormerError(f'--calibration {args.calibration}: holds no images: give a folder of images (JPEG, '
                                f'PNG, ...), e.g. one made by timm-mobileformer demo-data')
    if args.checkpoint:
        model = create_from_checkpoint(checkpoint_file(args.checkpoint), args.model, args.use_ema)
    elif args.model is None:
        raise MobileFormerError('--model is required without --checkpoint: e.g. --model 294m')
    else:
        try:
            model = timm.create_model(args.model, pretrained=args.pretrained).eval()
        except WeightsUnreachableError as err:
            raise type(err)(err.cli_message('--checkpoint FILE'), err.variant, err.repo_id, err.reason) from None
    if (args.fixed_size or args.save_optimized) and out.suffix != '.onnx':
        raise MobileFormerError('--fixed-size and --save-optimized apply to .onnx files only')
    if args.save_optimized:
        if Path(args.save_optimized).resolve() == out.resolve():
            raise MobileFormerError('--save-optimized must name another file than --out')
        check_output(args.save_optimized, suffixes=('.onnx',), inputs=[args.checkpoint], overwrite=args.overwrite,
                     option='--save-optimized')
    if out.suffix == '.pte':
        return _export_executorch(args, model, out)
    checks = export_to(model, out, args.img_size, args.opset, check=not args.no_check, overwrite=args.overwrite,
                       fixed_size=args.fixed_size, optimized_path=args.save_optimized,
                       optimized_batch=args.batch_size, log=print)
    sizes = (f'height and width {args.img_size}' if args.fixed_size else f'height and width {MIN_SIZE} to {MAX_SIZE}')
    print(f'wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {FORMATS[out.suffix]}): input x (batch, 3, height, '
          f'width), {sizes}'
          + ('; load with torch.export.load' if out.suffix == '.pt2' else ''))
    if checks:
        print('checked against PyTorch, max relative difference: '
              + ', '.join(f'{k}: {v:.1e}' for k, v in checks.items()))
    return 0


def _export_executorch(args: argparse.Namespace, model: nn.Module, out: Path) -> int:
    """A .pte at a fixed batch and size, fp32 or int8 (calibrated on --calibration)."""
    batch_size = args.batch_size or 1
    calibration = (calibration_images(Path(args.calibration), model, batch_size, args.img_size)
                   if args.calibration else None)
    checks = export_to(model, out, args.img_size, overwrite=args.overwrite, batch_size=batch_size,
                       quantize=args.quantize, calibration=calibration)
    config = resolve_data_config({}, model=model)
    print(f'wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {FORMATS[out.suffix]}, {args.quantize or "fp32"}): '
          f'input x ({batch_size}, 3, {args.img_size}, {args.img_size}) float32, resized and cropped as '
          f"{config['crop_pct']} crop, normalised with mean {config['mean']} and std {config['std']}; output "
          f'logits ({batch_size}, {model.num_classes})')
    print('checked in ExecuTorch against PyTorch: ' + ', '.join(f'{k} {v:.3g}' for k, v in checks.items()))
    return 0

