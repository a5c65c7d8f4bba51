"""Export Mobile-Former for deployment: `torch.export` programs and ONNX files with a dynamic batch and size.

Both start from the fused inference form (`model.fuse(channels_last=False)`: ONNX has no memory formats, so
the graph stays NCHW). `timm-mobileformer export VARIANT --out model.onnx` writes an ONNX file and checks
it against PyTorch with ONNX Runtime; `--out model.pt2` writes the `torch.export` program instead (load it
with `torch.export.load`). ONNX needs the optional extra: `pip install "timm-mobileformer[onnx]"`. Files are
written under a temporary name and renamed into place only when complete.
"""
import argparse
import copy
import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.export import Dim, ExportedProgram

import timm
from .errors import MobileFormerError
from .mobileformer import MobileFormer
from .weights import resolve_model_name

COMMAND = 'export'
HELP = 'Export a Mobile-Former variant to ONNX (dynamic batch and image size) and check it with ONNX Runtime.'

# The exported graph guards on a last feature map larger than 1 x 1, i.e. inputs of 33 px and more
MIN_SIZE, MAX_SIZE = 64, 4096


def inference_form(model: nn.Module) -> nn.Module:
    """An eval copy of `model`, fused and NCHW when it is a Mobile-Former, with plain contiguous weights
    (an exported graph gains nothing from the eager CPU layouts `fuse()` picks)."""
    model = copy.deepcopy(model).eval()
    if isinstance(model, MobileFormer):
        model.fuse(channels_last=False)
        with torch.no_grad():
            for param in model.parameters():
                param.data = param.data.contiguous()
    return model


def dynamic_shapes() -> Dict[str, Dict[int, Dim]]:
    """Batch, height and width of the input `x` left free."""
    return {'x': {
        0: Dim('batch', min=1, max=1024),
        2: Dim('height', min=MIN_SIZE, max=MAX_SIZE),
        3: Dim('width', min=MIN_SIZE, max=MAX_SIZE),
    }}


def export_program(model: nn.Module, img_size: int = 224) -> ExportedProgram:
    """`torch.export` of the inference form, with a dynamic batch and image size."""
    x = torch.randn(2, 3, img_size, img_size)
    return torch.export.export(inference_form(model), (x,), dynamic_shapes=dynamic_shapes())


def _partial(path: Path) -> Path:
    return path.with_name(f'.{path.name}.partial')


def export_onnx(model: nn.Module, path: Path, img_size: int = 224, opset: Optional[int] = None) -> 'torch.onnx.ONNXProgram':
    """Write the inference form of `model` to one ONNX file with a dynamic batch and image size; the
    returned ONNXProgram also holds the `torch.export` program it was translated from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    x = torch.randn(2, 3, img_size, img_size)
    try:
        program = torch.onnx.export(
            inference_form(model), (x,), str(tmp), dynamo=True, dynamic_shapes=dynamic_shapes(),
            opset_version=opset, external_data=False, input_names=['x'], output_names=['logits'],
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return program


def save_program(model: nn.Module, path: Path, img_size: int = 224) -> ExportedProgram:
    """Write the `torch.export` program of the inference form to `path` (a .pt2 file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(model, img_size)
    tmp = _partial(path)
    try:
        torch.export.save(program, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return program


def missing_onnx_packages() -> List[str]:
    return [name for name in ('onnx', 'onnxscript', 'onnxruntime') if importlib.util.find_spec(name) is None]


def onnx_max_rel_diff(path: Path, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| over the largest |PyTorch| output, for input x."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('variant', help='e.g. 294m or mobileformer_294m')
    parser.add_argument('--out', type=Path, required=True,
                        help='the file to write: .onnx for ONNX, .pt2 for a torch.export program')
    parser.add_argument('--pretrained', action='store_true', help="export the authors' ImageNet weights")
    parser.add_argument('--img-size', type=int, default=224, help='size of the example input (any size runs)')
    parser.add_argument('--opset', type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument('--no-check', action='store_true', help='skip the ONNX Runtime comparison')


def run(args: argparse.Namespace) -> int:
    try:
        variant = resolve_model_name(args.variant)
    except MobileFormerError as e:
        raise SystemExit(str(e))
    path = args.out
    if path.suffix not in ('.onnx', '.pt2'):
        raise SystemExit(f'--out must end in .onnx (ONNX) or .pt2 (torch.export program), got {path}')
    missing = missing_onnx_packages() if path.suffix == '.onnx' else []
    if missing:
        raise SystemExit(f'ONNX export needs {", ".join(missing)}: pip install "timm-mobileformer[onnx]"')
    model = timm.create_model(variant, pretrained=args.pretrained).eval()
    if path.suffix == '.pt2':
        program = save_program(model, path, args.img_size)
        module = program.module()
        x = torch.randn(3, 3, 160, 224)
        with torch.no_grad():
            ref = model(x)
            diff = float((module(x) - ref).abs().max() / ref.abs().max())
        print(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB): torch.export program, input x (batch, 3, '
              f'height, width), height and width {MIN_SIZE} to {MAX_SIZE}; load with torch.export.load. '
              f'Max relative difference to eager at (3, 3, 160, 224): {diff:.1e}')
        return 0 if diff <= 1e-4 else 1
    export_onnx(model, path, args.img_size, args.opset)
    print(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB): input x (batch, 3, height, width), '
          f'height and width {MIN_SIZE} to {MAX_SIZE}')
    if not args.no_check:
        checks: Dict[str, Any] = {}
        for shape in ((1, 3, args.img_size, args.img_size), (3, 3, 160, 224)):
            x = torch.randn(*shape)
            checks[str(shape)] = onnx_max_rel_diff(path, model, x)
        print('ONNX Runtime vs PyTorch, max relative difference: '
              + ', '.join(f'{k}: {v:.1e}' for k, v in checks.items()))
        if max(checks.values()) > 1e-4:
            print('difference above 1e-4')
            return 1
    return 0
