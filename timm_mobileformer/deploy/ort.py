"""Every ONNX Runtime session of the package is opened here (`make_session`), with the same options: ORT_ENABLE_ALL,
`threads` intra-op threads (default: all logical CPUs), sequential execution. Also ONNX Runtime's optimized
models (`save_optimized`: with the batch fixed, the dynamic ReLUs are moved into ORT's blocked layout by
`ort_graph.optimize` and the file is checked before it is kept), and the timing calls and op profiles of
`timm-mobileformer bench --runtime onnxruntime`, which times every model from its optimized model with the
batch fixed: the deployment form the README recommends.
"""
import collections
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..errors import MobileFormerError, one_line
from ..outputs import staged
from .ort_graph import optimize, pin_batch
from .program import MAX_REL_DIFF, rel_diff

__all__ = ['session_options', 'make_session', 'save_optimized', 'optimize_for_batch', 'make_call', 'profile_ops',
           'format_profile']


def session_options(threads: Optional[int] = None, profile_prefix: Optional[str] = None,
                    optimized_path: Optional[str] = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
        opts.log_severity_level = 3  # not the warning that such a file is for this kind of machine: we say so
    return opts


def make_session(model: Union[Path, str, bytes], threads: Optional[int] = None,
                 profile_prefix: Optional[str] = None, optimized_path: Optional[str] = None):
    """An ONNX Runtime CPU session of `model` (a file, or a serialized model) with `session_options`."""
    import onnxruntime as ort
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads, profile_prefix, optimized_path),
                                providers=['CPUExecutionProvider'])


def save_optimized(path: Path, optimized_path: Path, batch_size: Optional[int] = None, overwrite: bool = True) -> int:
    """ONNX Runtime's optimized form of the ONNX file `path` (ORT_ENABLE_ALL, CPU), written staged to
    `optimized_path`; it runs only on machines like this one. With `batch_size`, the batch is fixed first and the
    dynamic ReLUs are then computed in ORT's blocked layout and the graph trimmed further (`ort_graph.optimize`),
    and the file is checked against `path` before it is kept. Returns the number of dynamic ReLUs rewritten."""
    import onnx
    with staged(optimized_path, overwrite=overwrite) as tmp:
        source = pin_batch(onnx.load(str(path)), batch_size).SerializeToString() if batch_size else path
        make_session(source, optimized_path=str(tmp))
        rewritten = 0
        if batch_size:
            model = onnx.load(str(tmp))
            rewritten = optimize(model)
            onnx.save(model, str(tmp))
            _check_same_outputs(tmp, Path(path), batch_size)
    return rewritten


def _check_same_outputs(path: Path, reference: Path, batch_size: int) -> None:
    """The ONNX file `path` computes what `reference` computes, at `batch_size` and (where free) two sizes."""
    advice = 'nothing was written; save it without --batch-size, and please report this with your onnxruntime version'
    ref_session = make_session(reference)
    try:
        session = make_session(path)
    except Exception as err:  # the rewritten graph is not one this ONNX Runtime can load
        raise MobileFormerError(f"ONNX Runtime cannot load its rewritten optimized model ({one_line(err)[:200]}): "
                                f'{advice}') from None
    dims = session.get_inputs()[0].shape
    sizes = [tuple(dims[2:])] if all(isinstance(d, int) for d in dims[2:]) else [(224, 224), (160, 224)]
    rng = np.random.default_rng(0)
    for size in sizes:
        x = rng.standard_normal((batch_size, 3) + size, dtype=np.float32)
        ref = ref_session.run(None, {ref_session.get_inputs()[0].name: x})[0]
        try:
            out = session.run(None, {session.get_inputs()[0].name: x})[0]
        except Exception as err:
            raise MobileFormerError(f"ONNX Runtime's rewritten optimized model fails at {x.shape} "
                                    f'({one_line(err)[:200]}): {advice}') from None
        diff = rel_diff(out, ref)
        if not diff <= MAX_REL_DIFF:  # NaN too
            raise MobileFormerError(f"ONNX Runtime's optimized model differs from the ONNX file by {diff:.1e} "
                                    f'(relative) at {x.shape}: {advice}')


def optimize_for_batch(path: Path, batch_size: int) -> tuple[Path, int]:
    """ONNX Runtime's optimized model of `path` with the batch fixed, next to it; and the number of dynamic ReLUs
    moved into the blocked layout (0 for a model without them)."""
    optimized = path.with_name(f'{path.stem}_b{batch_size}.ort.onnx')
    return optimized, save_optimized(path, optimized, batch_size)


def make_call(session, batch_size: int, img_size: int) -> Callable[[], None]:
    x = np.random.default_rng(0).standard_normal((batch_size, 3, img_size, img_size), dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def profile_ops(path: Path, batch_size: int, img_size: int, threads: Optional[int] = None,
                runs: int = 20) -> tuple[list[tuple[str, float, int]], int]:
    """ORT profiler: (op type, share of kernel time, node count) sorted by time, and the number of nodes that
    ran per call (the optimized graph)."""
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(path, threads, profile_prefix=os.path.join(tmp, 'prof'))
        call = make_call(session, batch_size, img_size)
        for _ in range(3):
            call()
        for _ in range(runs):
            call()
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, float] = collections.Counter()
    nodes: dict[str, set] = collections.defaultdict(set)
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            op = e['args'].get('op_name', '?')
            times[op] += e['dur']
            nodes[op].add(e['name'])
    total = sum(times.values()) or 1.
    rows = sorted(((op, t / total, len(nodes[op])) for op, t in times.items()), key=lambda r: -r[1])
    return rows, sum(len(v) for v in nodes.values())


def format_profile(name: str, rows: list[tuple[str, float, int]], n_nodes: int, top: int = 12) -> str:
    lines = [f'{name}: {n_nodes} nodes run per call (ORT-optimized graph); kernel time by op type:']
    lines += [f'  {op:<28} {share:6.1%}  {count:4d} nodes' for op, share, count in rows[:top]]
    rest = sum(share for _, share, _ in rows[top:])
    if rest:
        lines.append(f'  {"(others)":<28} {rest:6.1%}')
    return '\n'.join(lines)
