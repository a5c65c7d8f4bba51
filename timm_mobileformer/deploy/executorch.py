"""ExecuTorch programs (`.pte`) for XNNPACK, the CPU path of Android and iOS apps: `export_executorch`.

ExecuTorch's documented path: `torch.export.export` at a fixed batch and size, then `to_edge_transform_and_lower`
with `XnnpackPartitioner`, then `.to_executorch()`. Mobile-Former is lowered from its XNNPACK runtime form
(`xnnpack_form.py`), in which the partitioner takes every op; other timm models (the bench's peers) take the
stock path from `reparameterize_model`. int8 is static quantization with XNNPACK's own quantizer (PT2E:
symmetric, per-channel weights), calibrated on images read with the model's own preprocessing. Every program is
loaded back in ExecuTorch's runtime and checked against PyTorch before it is kept. Needs the optional extra:
`pip install "timm-mobileformer[executorch]"`.
"""
import collections
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..errors import MobileFormerError
from ..outputs import check_output, staged
from .program import MAX_REL_DIFF, inference_form, rel_diff

__all__ = [
    'QUANTIZE', 'MIN_COSINE', 'missing_executorch', 'runtime_form', 'quantized_form', 'lower', 'ops_outside_delegate',
    'calibration_images', 'export_executorch', 'load_program', 'set_threads', 'make_call', 'op_events', 'profile_ops',
    'format_profile', 'image_files', 'require_executorch',
]

QUANTIZE = ('int8',)
# an int8 program's logits against PyTorch's fp32 logits: the least cosine similarity it may show
MIN_COSINE = 0.98
# the operators outside a delegate that are not computation: the dim-order (memory format) copies
NOT_COMPUTE = ('dim_order_ops::',)
CHECK_IMAGES = 4
MISSING_EXTRA = 'ExecuTorch programs need the executorch package: pip install "timm-mobileformer[executorch]"'


def missing_executorch() -> Optional[str]:
    """One line naming the extra, or None when ExecuTorch is installed."""
    return MISSING_EXTRA if importlib.util.find_spec('executorch') is None else None


def require_executorch() -> None:
    message = missing_executorch()
    if message:
        raise MobileFormerError(message)


def runtime_form(model: nn.Module, batch_size: int = 1) -> nn.Module:
    """What a program is lowered from: the XNNPACK form of a Mobile-Former, else timm's inference form."""
    from ..mobileformer import MobileFormer
    if isinstance(model, MobileFormer):
        from .xnnpack_form import XnnpackMobileFormer
        return XnnpackMobileFormer(model, batch_size)
    return inference_form(model)


def _quantizer(float_types: Sequence[type] = ()):
    """XNNPACK's quantizer, int8 with symmetric per-channel weights, on every op it annotates (the stock path),
    except inside modules of `float_types`, which stay in float."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for module_type in float_types:
        quantizer.set_module_type(module_type, None)
    return quantizer


def quantized_form(form: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor],
                   float_types: Optional[Sequence[type]] = None) -> nn.Module:
    """`form` statically quantized to int8 by XNNPACK's quantizer (`_quantizer`), calibrated by running it on
    `calibration`: the int8 arithmetic in PyTorch, what `lower` lowers. `float_types` stay in float (default: the
    XNNPACK form's `FLOAT_IN_INT8`)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    if float_types is None:
        from .xnnpack_form import FLOAT_IN_INT8 as float_types
    prepared = prepare_pt2e(torch.export.export(form, (example,)).module(), _quantizer(float_types))
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


def lower(form: nn.Module, example: torch.Tensor, calibration: Optional[Sequence[torch.Tensor]] = None):
    """The ExecuTorch program (an ExecutorchProgramManager; `.buffer` is the .pte) of `form` for XNNPACK at the
    shape of `example`; int8 when `calibration` batches are given. Lowered with the XNNPACK backend's own edge
    config (that of its export recipes), which leaves out the edge dialect's IR check: the program is checked
    against PyTorch instead, by `export_executorch`."""
    from executorch.backends.xnnpack import XnnpackPartitioner, get_xnnpack_edge_compile_config
    from executorch.exir import to_edge_transform_and_lower
    if calibration is not None:
        form = quantized_form(form, example, calibration)
    program = torch.export.export(form, (example,))
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                       compile_config=get_xnnpack_edge_compile_config()).to_executorch()


def ops_outside_delegate(program: bytes) -> dict[str, int]:
    """The compute ops a .pte (its bytes) runs outside its delegates, by operator name, read from the program's own
    instruction list: none for a fully delegated one (the memory-format copies ExecuTorch adds are not counted)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    pte = deserialize_pte_binary(program)
    counts: dict[str, int] = collections.Counter()
    for plan in getattr(pte, 'program', pte).execution_plan:
        for chain in plan.chains:
            for instruction in chain.instructions:
                call = instruction.instr_args
                name = plan.operators[call.op_index].name if type(call).__name__ == 'KernelCall' else ''
                if name and not name.startswith(NOT_COMPUTE):
                    counts[name] += 1
    return dict(counts)


def image_files(folder: Path) -> list[Path]:
    from PIL import Image
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() in extensions and p.is_file())


def calibration_images(folder: Path, model: nn.Module, batch_size: int = 1, img_size: Optional[int] = None,
                       limit: int = 32) -> list[torch.Tensor]:
    """Up to `limit` images of `folder` (searched recursively), read with the model's own preprocessing (its data
    config: resize, crop, mean/std) at `img_size` (default: the config's), as batches of `batch_size`."""
    from timm.data import create_transform, resolve_data_config

    from ..predict import read_image
    folder = Path(folder)
    if not folder.is_dir():
        raise MobileFormerError(f'--calibration {folder}: not a folder: give a folder of images (for example one '
                                f'made by timm-mobileformer demo-data)')
    files = image_files(folder)[:limit]
    if len(files) < batch_size:
        raise MobileFormerError(f'--calibration {folder}: holds {len(files)} image(s), fewer than one batch of '
                                f'{batch_size}: give a folder of images (JPEG, PNG, ...)')
    size = {'input_size': (3, img_size, img_size)} if img_size else {}
    transform = create_transform(**resolve_data_config(size, model=model))
    images = torch.stack([transform(read_image(f)) for f in files[:len(files) // batch_size * batch_size]])
    return list(images.split(batch_size))


def load_program(path: Path):
    """An ExecuTorch module of the .pte at `path` (XNNPACK and the portable kernels registered)."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch
    return _load_for_executorch(str(path))


def set_threads(threads: Optional[int] = None) -> None:
    """XNNPACK's thread pool: `threads` threads (default: every logical CPU)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    _unsafe_reset_threadpool(threads or os.cpu_count() or 1)


def make_call(module, batch_size: int, img_size: int) -> Callable[[], None]:
    x = torch.randn(batch_size, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    return lambda: module.forward((x,))


def _check(path: Path, model: nn.Module, inputs: Sequence[torch.Tensor], quantized: bool) -> dict[str, float]:
    """The program at `path`, run in ExecuTorch, against eager `model`: fp32 within MAX_REL_DIFF relative, int8
    with a cosine similarity of at least MIN_COSINE to the fp32 logits over `inputs`."""
    module = load_program(path)
    with torch.no_grad():
        ref = torch.cat([model(x) for x in inputs])
    out = torch.cat([module.forward((x,))[0] for x in inputs])
    if quantized:
        cosine = float(torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1)).min())
        if not cosine >= MIN_COSINE:
            raise MobileFormerError(f'the int8 program agrees with PyTorch only to a cosine similarity of '
                                    f'{cosine:.3f} (at least {MIN_COSINE} is needed): nothing was written; calibrate '
                                    f'on more images like those the model will see')
        return {'min cosine similarity to fp32': cosine}
    diff = rel_diff(out, ref)
    if not diff <= MAX_REL_DIFF:  # NaN too
        raise MobileFormerError(f'the ExecuTorch program differs from PyTorch by {diff:.1e} (relative), above '
                                f'{MAX_REL_DIFF:g}: nothing was written; this is a timm-mobileformer bug, please '
                                f'report it')
    return {'max relative difference': diff}


def export_executorch(
        model: nn.Module,
        path: Path,
        img_size: int = 224,
        batch_size: int = 1,
        quantize: Optional[str] = None,
        calibration: Optional[Sequence[torch.Tensor]] = None,
        overwrite: bool = False,
        check: bool = True,
) -> dict[str, float]:
    """Write an ExecuTorch program for XNNPACK of `model` to `path` (.pte): input a float32 (batch_size, 3,
    img_size, img_size) batch preprocessed with the model's data config, output the logits. `quantize='int8'`
    needs `calibration` batches of that shape (see `calibration_images`). The program is refused if any compute
    op stays outside the delegate, and checked in ExecuTorch against PyTorch before it is kept (staged; `check=False`
    skips the comparison, for programs of random weights that are only timed). Returns what was checked."""
    require_executorch()
    path = check_output(path, suffixes=('.pte',), overwrite=overwrite)
    if quantize not in (None,) + QUANTIZE:
        raise MobileFormerError(f'--quantize {quantize}: choose from {", ".join(QUANTIZE)}')
    if quantize and not calibration:
        raise MobileFormerError('int8 needs calibration images: pass --calibration DIR, a folder of images')
    model = model.eval()
    shape = (batch_size, 3, img_size, img_size)
    if calibration and any(tuple(batch.shape) != shape for batch in calibration):
        raise MobileFormerError(f'calibration batches must be {shape}, as the program takes')
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    program = lower(runtime_form(model, batch_size), example, calibration if quantize else None)
    outside = ops_outside_delegate(program.buffer)
    if outside:
        raise MobileFormerError(f'{sum(outside.values())} ops stay outside XNNPACK ({", ".join(sorted(outside))}): '
                                f'nothing was written; this is a timm-mobileformer bug, please report it')
    inputs = list(calibration[:CHECK_IMAGES]) if quantize else [example, torch.randn(*shape)]
    with staged(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(program.buffer)
        return _check(tmp, model, inputs, quantized=quantize is not None) if check else {}


def op_events(path: Path, batch_size: int, img_size: int, threads: Optional[int] = None,
              runs: int = 20) -> list[tuple[str, float]]:
    """ExecuTorch's profiler (ETDump, read by the devtools' Inspector) over `runs` calls: every op that ran in a
    call, XNNPACK's own ops inside the delegate included, in execution order, as (op type, median ms)."""
    import re

    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch
    set_threads(threads)
    module = _load_for_executorch(str(path), enable_etdump=True)
    call = make_call(module, batch_size, img_size)
    for _ in range(runs):
        call()
    with tempfile.TemporaryDirectory() as folder:
        etdump = os.path.join(folder, 'profile.etdp')
        module.write_etdump_result_to_file(etdump)
        inspector = Inspector(etdump_path=etdump)
    skip = ('Method::', 'Program::', 'DELEGATE_CALL', 'OPERATOR_CALL')
    return [(re.sub(r' #\d+$', '', event.name), event.perf_data.p50) for block in inspector.event_blocks
            for event in block.events if event.perf_data is not None and not event.name.startswith(skip)]


def profile_ops(path: Path, batch_size: int, img_size: int, threads: Optional[int] = None,
                runs: int = 20) -> tuple[list[tuple[str, float, int]], int]:
    """`op_events` by op type: (op type, share of op time, ops of that type) sorted by time, and the number of
    ops that ran per call."""
    times: dict[str, float] = collections.Counter()
    ops: dict[str, int] = collections.Counter()
    for op_type, ms in op_events(path, batch_size, img_size, threads, runs):
        times[op_type] += ms
        ops[op_type] += 1
    total = sum(times.values()) or 1.
    rows = sorted(((op, t / total, ops[op]) for op, t in times.items()), key=lambda r: -r[1])
    return rows, sum(ops.values())


def format_profile(name: str, rows: list[tuple[str, float, int]], n_ops: int, top: int = 12) -> str:
    lines = [f'{name}: {n_ops} ops run per call (XNNPACK inside the delegate, portable kernels outside); op time '
             f'by op type:']
    lines += [f'  {op:<40} {share:6.1%}  {count:4d} ops' for op, share, count in rows[:top]]
    rest = sum(share for _, share, _ in rows[top:])
    if rest:
        lines.append(f'  {"(others)":<40} {rest:6.1%}')
    return '\n'.join(lines)
