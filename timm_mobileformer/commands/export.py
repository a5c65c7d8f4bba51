"""`timm-mobileformer export`: an ONNX file or a torch.export program, checked before it is kept."""
import argparse
from pathlib import Path

import timm

from ..errors import MobileFormerError
from ..deploy.export import FORMATS, check_export_format, export_to
from ..deploy.program import MAX_SIZE, MIN_SIZE
from ..hub import WeightsUnreachableError
from ..outputs import check_output
from ..weights import create_from_checkpoint
from ._common import add_img_size_argument, add_model_argument, add_output_argument, checkpoint_file, int_in

COMMAND = 'export'
HELP = ('Export a Mobile-Former to ONNX or a torch.export program (dynamic batch and image size), checked '
        'against PyTorch before it is kept.')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help='Mobile-Former variant, e.g. 294m or mobileformer_294m (default: detected '
                                    'from --checkpoint; required without it)')
    add_output_argument(parser, 'FILE', 'the file to write: .onnx for ONNX, .pt2 for a torch.export program')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--checkpoint', metavar='FILE',
                         help="local weights: the authors' .pth.tar, a train.py checkpoint, a model.safetensors or a "
                              'folder made by convert (default: random weights, unless --pretrained)')
    weights.add_argument('--pretrained', action='store_true', help='export the Hub weights of --model')
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help='with a checkpoint that holds EMA weights, export the plain weights instead '
                             '(default: the EMA weights, as timm does)')
    add_img_size_argument(parser, 224, 'side of the example input (the graph takes any side in range)', MIN_SIZE,
                          MAX_SIZE)
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
                        help='fix the batch of the --save-optimized file at N: ONNX Runtime then runs the dynamic '
                             "ReLUs in its blocked conv layout, the fastest form here (with --fixed-size too); the "
                             '.onnx file keeps its dynamic batch (default: the batch stays dynamic)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the ONNX Runtime comparison (a .pt2 is always checked)')


def run(args: argparse.Namespace) -> int:
    out = check_output(args.out, suffixes=tuple(FORMATS), inputs=[args.checkpoint], overwrite=args.overwrite)
    check_export_format(out)
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
    if args.batch_size and not args.save_optimized:
        raise MobileFormerError('--batch-size fixes the batch of the --save-optimized file: add --save-optimized FILE')
    if args.save_optimized:
        if Path(args.save_optimized).resolve() == out.resolve():
            raise MobileFormerError('--save-optimized must name another file than --out')
        check_output(args.save_optimized, suffixes=('.onnx',), inputs=[args.checkpoint], overwrite=args.overwrite,
                     option='--save-optimized')
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

