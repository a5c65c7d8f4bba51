"""Export Mobile-Former to a file by its suffix, checked against PyTorch before it is kept: `export_to`.

`.onnx`: the ONNX Runtime form (`onnx.py`), checked in ONNX Runtime; `.pt2`: the `torch.export` program of the
inference form (`program.py`; load it with `torch.export.load`), checked after loading it back; `.pte`: an
ExecuTorch program for XNNPACK (`executorch.py`), fp32 or int8, checked in ExecuTorch. By default
batch, height and width are dynamic; `fixed_size=True` (`--fixed-size`) leaves only the batch of an ONNX file
dynamic. Files are written staged (`outputs.staged`): under a temporary name, renamed into place only when
complete and checked.
"""
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..errors import MobileFormerError
from ..outputs import check_output, staged
from .executorch import export_executorch, require_executorch
from .onnx import check_onnx, write_onnx
from .ort import save_optimized
from .program import MAX_REL_DIFF, check_shapes, export_program, rel_diff

__all__ = ['FORMATS', 'missing_onnx_packages', 'check_export_format', 'check_program', 'export_to']

FORMATS = {'.onnx': 'ONNX', '.pt2': 'torch.export program', '.pte': 'ExecuTorch program for XNNPACK'}


def missing_onnx_packages() -> list[str]:
    return [name for name in ('onnx', 'onnxscript', 'onnxruntime') if importlib.util.find_spec(name) is None]


def check_export_format(path: Path) -> None:
    """A known format whose packages are installed, checked before any work."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MobileFormerError(f'--out {path}: must end in .onnx (ONNX), .pt2 (torch.export program) or .pte '
                                f'(ExecuTorch program)')
    if path.suffix == '.pte':
        require_executorch()
    missing = missing_onnx_packages() if path.suffix == '.onnx' else []
    if missing:
        raise MobileFormerError(f'ONNX export needs {", ".join(missing)}: pip install "timm-mobileformer[onnx]", '
                                f'or export a .pt2 program instead')


def check_program(path: Path, model: nn.Module, img_size: int = 224) -> dict[str, float]:
    """The `torch.export` program saved at `path`, loaded back, against eager `model`: the relative difference
    (`rel_diff`) per input shape of `check_shapes` (batch and size dynamic)."""
    module = torch.export.load(str(path)).module()
    checks = {}
    for shape in check_shapes(img_size):
        x = torch.randn(*shape)
        with torch.no_grad():
            checks[str(shape)] = rel_diff(module(x), model.eval()(x))
    return checks


def export_to(
        model: nn.Module,
        path: Path,
        img_size: int = 224,
        opset: Optional[int] = None,
        check: bool = True,
        overwrite: bool = False,
        log: Callable[[str], None] = lambda message: None,
        fixed_size: bool = False,
        optimized_path: Optional[Path] = None,
        optimized_batch: Optional[int] = None,
        batch_size: int = 1,
        quantize: Optional[str] = None,
        calibration: Optional[Sequence[torch.Tensor]] = None,
) -> dict[str, float]:
    """Export `model` to `path` (.onnx or .pt2), check the written file against eager PyTorch, and only then
    move it into place; returns the max relative differences checked (a .pt2 is always checked). A file whose
    outputs differ by more than MAX_REL_DIFF is not kept (MobileFormerError). With `optimized_path` (.onnx
    only), ONNX Runtime's optimized model is written too (`ort.save_optimized`), its batch fixed at
    `optimized_batch` if given. A .pte is an ExecuTorch program (`executorch.export_executorch`) at a fixed
    `batch_size` and img_size, int8 with `quantize` and `calibration` batches."""
    path = check_output(path, suffixes=tuple(FORMATS), overwrite=overwrite)
    check_export_format(path)
    model = model.eval()
    if path.suffix == '.pte':
        return export_executorch(model, path, img_size, batch_size, quantize, calibration, overwrite)
    checks: dict[str, float] = {}
    with staged(path, overwrite=overwrite) as tmp:  # tmp keeps the suffix
        if path.suffix == '.pt2':
            torch.export.save(export_program(model, img_size), str(tmp))
            checks = check_program(tmp, model, img_size)
        else:
            write_onnx(model, tmp, img_size, opset, fixed_size)
            if check:
                checks = check_onnx(tmp, model, img_size, fixed_size)
        worst = max(checks.values(), default=0.)
        if not worst <= MAX_REL_DIFF:  # NaN too
            raise MobileFormerError(f'the exported file differs from PyTorch by {worst:.1e} (relative), above '
                                    f'{MAX_REL_DIFF:g}: nothing was written; this is a timm-mobileformer bug, '
                                    f'please report it')
        if optimized_path is not None and path.suffix == '.onnx':
            rewritten = save_optimized(tmp, optimized_path, optimized_batch, overwrite)
            log(f"wrote {optimized_path} (ONNX Runtime's optimized model"
                + (f', batch {optimized_batch}, {rewritten} dynamic ReLUs in the blocked layout)' if optimized_batch
                   else ', dynamic batch)'))
    return checks
