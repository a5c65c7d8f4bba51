"""ONNX files of Mobile-Former: the ONNX Runtime form (`ort_form.OrtMobileFormer`: BatchNorms, scales and
shuffles folded, dynamic ReLU as Max of two Muls, token-only work precomputed; see docs/deploy.md) exported with
`torch.onnx.export(dynamo=True)`, a dynamic batch and (unless `fixed_size`) a dynamic size, and checked against
PyTorch in ONNX Runtime. Needs the optional extra: `pip install "timm-mobileformer[onnx]"`.
"""
from pathlib import Path
from typing import Optional

import timm
import torch
import torch.nn as nn
from timm.models import reparameterize_model

from ..mobileformer import MobileFormer, model_cfgs
from ..outputs import staged
from .ort import make_session, save_optimized
from .ort_form import OrtMobileFormer
from .program import check_shapes, dynamic_shapes, inference_form, rel_diff

__all__ = ['DEPLOY_OPSET', 'runtime_form', 'write_onnx', 'export_onnx', 'check_onnx', 'export_peer',
           'export_for_bench']

# The default opset of Mobile-Former's ONNX files: from 23 the Former's attention is one `Attention` node
DEPLOY_OPSET = 23


def runtime_form(model: nn.Module) -> nn.Module:
    """The form ONNX files are exported from: `OrtMobileFormer` for a Mobile-Former, else `inference_form`."""
    if isinstance(model, MobileFormer):
        return OrtMobileFormer(model)
    return inference_form(model)


def write_onnx(model: nn.Module, path: Path, img_size: int = 224, opset: Optional[int] = None,
               fixed_size: bool = False) -> 'torch.onnx.ONNXProgram':
    """Write the runtime form of `model` to the ONNX file `path` as it is (the caller stages it); returns the
    ONNXProgram, which also holds the `torch.export` program it was translated from."""
    x = torch.randn(2, 3, img_size, img_size)
    if opset is None and isinstance(model, MobileFormer):
        opset = DEPLOY_OPSET
    return torch.onnx.export(
        runtime_form(model), (x,), str(path), dynamo=True, dynamic_shapes=dynamic_shapes(fixed_size),
        opset_version=opset, external_data=False, input_names=['x'], output_names=['logits'],
    )


def export_onnx(
        model: nn.Module,
        path: Path,
        img_size: int = 224,
        opset: Optional[int] = None,
        fixed_size: bool = False,
        optimized_path: Optional[Path] = None,
        optimized_batch: Optional[int] = None,
) -> 'torch.onnx.ONNXProgram':
    """Write the runtime form of `model` to one ONNX file with a dynamic batch and image size (with
    `fixed_size`, img_size x img_size only), staged: it replaces `path` only when complete. With
    `optimized_path`, also write ONNX Runtime's optimized model (`ort.save_optimized`; it runs only on a machine
    like this one), with its batch fixed at `optimized_batch` if given. Returns the ONNXProgram."""
    with staged(path, overwrite=True) as tmp:
        program = write_onnx(model, tmp, img_size, opset, fixed_size)
        if optimized_path is not None:
            save_optimized(tmp, optimized_path, optimized_batch)
    return program


def check_onnx(path: Path, model: nn.Module, img_size: int = 224, fixed_size: bool = False) -> dict[str, float]:
    """The ONNX file `path` in ONNX Runtime against eager `model`: the relative difference (`rel_diff`) per input
    shape of `check_shapes`."""
    session = make_session(path)
    checks = {}
    for shape in check_shapes(img_size, fixed_size):
        x = torch.randn(*shape)
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            checks[str(shape)] = rel_diff(out, model.eval()(x).numpy())
    return checks


def export_peer(model: nn.Module, path: Path, img_size: int = 224) -> None:
    """A timm model through the same exporter as Mobile-Former: dynamo, dynamic batch, img_size fixed."""
    x = torch.randn(2, 3, img_size, img_size)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, dynamic_shapes=dynamic_shapes(fixed_size=True),
                      external_data=False, input_names=['x'], output_names=['logits'])


def export_for_bench(name: str, folder: Path, img_size: int = 224) -> Path:
    """`name` exported to folder/name.onnx, size fixed, for `bench --runtime onnxruntime` (random weights: speed
    does not depend on them); a timm peer as it is (eval, `reparameterize_model`)."""
    path = Path(folder) / f'{name}.onnx'
    model = timm.create_model(name).eval()
    if name in model_cfgs:
        export_onnx(model, path, img_size=img_size, fixed_size=True)
    else:
        export_peer(reparameterize_model(model), path, img_size)
    return path
