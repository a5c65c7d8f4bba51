"""What every exported form of Mobile-Former shares: the inference form, the dynamic shapes of the exported
graphs and the sizes they take, the `torch.export` program, and how closely an exported file must match PyTorch.

The `torch.export` program starts from the fused inference form (`reparameterize_model`: the graph stays NCHW).
By default batch, height and width are dynamic; `fixed_size=True` leaves only the batch dynamic.
"""
import copy

import torch
import torch.nn as nn
from timm.models import reparameterize_model
from torch.export import Dim, ExportedProgram

__all__ = ['MIN_SIZE', 'MAX_SIZE', 'MAX_REL_DIFF', 'inference_form', 'dynamic_shapes', 'export_program', 'check_shapes',
           'rel_diff']

# The exported graph guards on a last feature map larger than 1 x 1, i.e. inputs of 33 px and more
MIN_SIZE, MAX_SIZE = 64, 4096
# the largest |exported - PyTorch| / max |PyTorch| a written file may show
MAX_REL_DIFF = 1e-4


def inference_form(model: nn.Module) -> nn.Module:
    """An eval copy of `model` in its inference form for export: timm's `reparameterize_model` replaces each
    part by its folded form, with plain NCHW weights (the eager CPU layouts of `MobileFormer.fuse()` are
    never applied, so there is nothing to undo)."""
    return reparameterize_model(copy.deepcopy(model).eval(), inplace=True)


def dynamic_shapes(fixed_size: bool = False) -> dict[str, dict[int, Dim]]:
    """Batch, height and width of the input `x` left free (only the batch with `fixed_size`)."""
    if fixed_size:
        return {'x': {0: Dim('batch', min=1, max=1024)}}
    return {'x': {
        0: Dim('batch', min=1, max=1024),
        2: Dim('height', min=MIN_SIZE, max=MAX_SIZE),
        3: Dim('width', min=MIN_SIZE, max=MAX_SIZE),
    }}


def export_program(model: nn.Module, img_size: int = 224) -> ExportedProgram:
    """`torch.export` of the inference form, with a dynamic batch and image size."""
    x = torch.randn(2, 3, img_size, img_size)
    return torch.export.export(inference_form(model), (x,), dynamic_shapes=dynamic_shapes())


def check_shapes(img_size: int, fixed_size: bool = False) -> list[tuple[int, int, int, int]]:
    """The inputs an exported file is checked at: batch 1 at img_size, and batch 3 at another size and aspect
    ratio than the traced example (at img_size too with `fixed_size`)."""
    return [(1, 3, img_size, img_size), (3, 3, img_size, img_size) if fixed_size else (3, 3, 160, 224)]


def rel_diff(out, ref) -> float:
    """max |out - ref| / max |ref| of two tensors or arrays (NaN if either holds NaN)."""
    return float(abs(out - ref).max() / abs(ref).max())
