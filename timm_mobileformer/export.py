"""Export Mobile-Former for deployment: `torch.export` programs and ONNX files with a dynamic batch and size.

The `torch.export` program starts from the fused inference form (`model.fuse(channels_last=False)`: the graph
stays NCHW). ONNX files start from the runtime form, `layers.deploy.DeployMobileFormer` (BatchNorms, scales,
shuffles folded, dynamic ReLU as Max of two Muls, token-only work precomputed): see docs/deploy.md. By default
batch, height and width are dynamic; `fixed_size=True` (`--fixed-size`) leaves only the batch dynamic.
`timm-mobileformer export VARIANT --out model.onnx` writes an ONNX file and checks it against PyTorch with ONNX
Runtime; `--out model.pt2` writes the `torch.export` program instead (load it with `torch.export.load`). ONNX
needs the optional extra: `pip install "timm-mobileformer[onnx]"`. Files are written under a temporary name
and renamed into place only when complete.
"""
import copy
import importlib.util
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from torch.export import Dim, ExportedProgram

import timm
from timm.models import reparameterize_model

from .errors import MobileFormerError
from .mobileformer import MobileFormer
from .outputs import check_output, staged

# The exported graph guards on a last feature map larger than 1 x 1, i.e. inputs of 33 px and more
MIN_SIZE, MAX_SIZE = 64, 4096
# the largest |exported - PyTorch| / max |PyTorch| a written file may show
MAX_REL_DIFF = 1e-4
# The default opset of Mobile-Former's ONNX files: from 23 the Former's attention is one `Attention` node
DEPLOY_OPSET = 23


def inference_form(model: nn.Module) -> nn.Module:
    """An eval copy of `model` in its inference form for export: timm's `reparameterize_model` replaces each
    part by its folded form, with plain NCHW weights (the eager CPU layouts of `MobileFormer.fuse()` are
    never applied, so there is nothing to undo)."""
    return reparameterize_model(copy.deepcopy(model).eval(), inplace=True)


def dynamic_shapes(fixed_size: bool = False) -> Dict[str, Dict[int, Dim]]:
    """Batch, height and width of the input `x` left free (only the batch with `fixed_size`)."""
    if fixed_size:
        return {'x': {0: Dim('batch', min=1, max=1024)}}
    return {'x': {
        0: Dim('batch', min=1, max=1024),
        2: Dim('height', min=MIN_SIZE, max=MAX_SIZE),
        3: Dim('width', min=MIN_SIZE, max=MAX_SIZE),
    }}


def runtime_form(model: nn.Module) -> nn.Module:
    """The form ONNX files are exported from: `DeployMobileFormer` for a Mobile-Former, else `inference_form`."""
    if isinstance(model, MobileFormer):
        from .layers.deploy import DeployMobileFormer
        return DeployMobileFormer(model)
    return inference_form(model)


def export_program(model: nn.Module, img_size: int = 224) -> ExportedProgram:
    """`torch.export` of the inference form, with a dynamic batch and image size."""
    x = torch.randn(2, 3, img_size, img_size)
    return torch.export.export(inference_form(model), (x,), dynamic_shapes=dynamic_shapes())


def _partial(path: Path) -> Path:
    return path.with_name(f'.{path.name}.partial')


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
    `fixed_size`, img_size x img_size only); the returned ONNXProgram also holds the `torch.export` program it
    was translated from. With `optimized_path`, also write ONNX Runtime's optimized model (ORT_ENABLE_ALL, CPU;
    it runs only on a machine like this one), with its batch fixed at `optimized_batch` if given (see
    `save_optimized`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    x = torch.randn(2, 3, img_size, img_size)
    if opset is None and isinstance(model, MobileFormer):
        opset = DEPLOY_OPSET
    try:
        program = torch.onnx.export(
            runtime_form(model), (x,), str(tmp), dynamo=True, dynamic_shapes=dynamic_shapes(fixed_size),
            opset_version=opset, external_data=False, input_names=['x'], output_names=['logits'],
        )
        if optimized_path is not None:
            save_optimized(tmp, optimized_path, optimized_batch)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return program


def save_optimized(path: Path, optimized_path: Path, batch_size: Optional[int] = None) -> int:
    """ONNX Runtime's optimized form of the ONNX file `path` (ORT_ENABLE_ALL, CPU), written atomically; it runs
    only on machines like this one. With `batch_size`, the batch is fixed first and the dynamic ReLUs are then
    computed in ORT's blocked layout and the graph trimmed further (`ort_graph.optimize`), and the file is
    checked against `path` before it is kept. Returns the number of dynamic ReLUs rewritten."""
    import onnx
    from .ort_graph import optimize, pin_batch
    from .ort import make_session
    optimized_path = Path(optimized_path)
    optimized_path.parent.mkdir(parents=True, exist_ok=True)
    tmp, pinned = _partial(optimized_path), optimized_path.with_name(f'.{optimized_path.name}.pinned.partial')
    try:
        source = Path(path)
        if batch_size:
            onnx.save(pin_batch(onnx.load(str(path)), batch_size), str(pinned))
            source = pinned
        make_session(source, optimized_path=str(tmp))
        rewritten = 0
        if batch_size:
            model = onnx.load(str(tmp))
            rewritten = optimize(model)
            onnx.save(model, str(tmp))
            _check_same_outputs(tmp, Path(path), batch_size)
        os.replace(tmp, optimized_path)
    finally:
        tmp.unlink(missing_ok=True)
        pinned.unlink(missing_ok=True)
    return rewritten


def _check_same_outputs(path: Path, reference: Path, batch_size: int) -> None:
    """The ONNX file `path` computes what `reference` computes, at `batch_size` and (where free) two sizes."""
    import numpy as np
    from .ort import make_session
    advice = 'nothing was written; save it without --batch-size, and please report this with your onnxruntime version'
    ref_session = make_session(reference)
    try:
        session = make_session(path)
    except Exception as err:  # the rewritten graph is not one this ONNX Runtime can load
        detail = ' '.join(str(err).split())[:200]
        raise MobileFormerError(f"ONNX Runtime cannot load its rewritten optimized model ({detail}): {advice}") from None
    dims = session.get_inputs()[0].shape
    sizes = [tuple(dims[2:])] if all(isinstance(d, int) for d in dims[2:]) else [(224, 224), (160, 224)]
    rng = np.random.default_rng(0)
    for size in sizes:
        x = rng.standard_normal((batch_size, 3) + size, dtype=np.float32)
        ref = ref_session.run(None, {ref_session.get_inputs()[0].name: x})[0]
        try:
            out = session.run(None, {session.get_inputs()[0].name: x})[0]
        except Exception as err:
            detail = ' '.join(str(err).split())[:200]
            raise MobileFormerError(f"ONNX Runtime's rewritten optimized model fails at {x.shape} ({detail}): "
                                    f'{advice}') from None
        diff = float(np.abs(out - ref).max() / np.abs(ref).max())
        if not diff <= MAX_REL_DIFF:  # NaN too
            raise MobileFormerError(f"ONNX Runtime's optimized model differs from the ONNX file by {diff:.1e} "
                                    f'(relative) at {x.shape}: {advice}')


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


FORMATS = {'.onnx': 'ONNX', '.pt2': 'torch.export program'}


def check_export_format(path: Path) -> None:
    """A known format whose packages are installed, checked before any work."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MobileFormerError(f'--out {path}: must end in .onnx (ONNX) or .pt2 (torch.export program)')
    missing = missing_onnx_packages() if path.suffix == '.onnx' else []
    if missing:
        raise MobileFormerError(f'ONNX export needs {", ".join(missing)}: pip install "timm-mobileformer[onnx]", '
                                f'or export a .pt2 program instead')


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
) -> Dict[str, float]:
    """Export `model` to `path` (.onnx or .pt2), check the written file against eager PyTorch, and only then
    move it into place; returns the max relative differences checked. A file whose outputs differ by more
    than MAX_REL_DIFF is not kept (MobileFormerError)."""
    path = check_output(path, suffixes=tuple(FORMATS), overwrite=overwrite)
    check_export_format(path)
    model = model.eval()
    checks: Dict[str, float] = {}
    with staged(path, overwrite=overwrite) as tmp:
        if path.suffix == '.pt2':
            torch.export.save(export_program(model, img_size), str(tmp))  # tmp keeps the .pt2 ending
            module = torch.export.load(str(tmp)).module()
            x = torch.randn(3, 3, 160, 224)
            with torch.no_grad():
                ref = model(x)
                checks[str(tuple(x.shape))] = float((module(x) - ref).abs().max() / ref.abs().max())
        else:
            export_onnx(model, tmp, img_size, opset, fixed_size=fixed_size)
            if check:
                other = (3, 3, img_size, img_size) if fixed_size else (3, 3, 160, 224)
                for shape in ((1, 3, img_size, img_size), other):
                    checks[str(shape)] = onnx_max_rel_diff(tmp, model, torch.randn(*shape))
        worst = max(checks.values(), default=0.)
        if not worst <= MAX_REL_DIFF:  # NaN too
            raise MobileFormerError(f'the exported file differs from PyTorch by {worst:.1e} (relative), above '
                                    f'{MAX_REL_DIFF:g}: nothing was written; this is a timm-mobileformer bug, '
                                    f'please report it')
        if optimized_path is not None and path.suffix == '.onnx':
            rewritten = save_optimized(tmp, optimized_path, optimized_batch)
            log(f"wrote {optimized_path} (ONNX Runtime's optimized model"
                + (f', batch {optimized_batch}, {rewritten} dynamic ReLUs in the blocked layout)' if optimized_batch
                   else ', dynamic batch)'))
    return checks
