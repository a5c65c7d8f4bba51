"""ONNX Runtime sessions, timing and profiles for `timm-mobileformer bench --runtime onnxruntime`.

Every model is exported with the same exporter (`torch.onnx.export(dynamo=True)`, the image size fixed, the
batch dynamic): Mobile-Former through the package's `export_onnx` (the runtime form of `layers/deploy.py`), timm
peers as they are (eval, `reparameterize_model`). For each batch size, every model then runs from ONNX Runtime's
optimized model with that batch fixed (`export.save_optimized`, which for Mobile-Former also moves the dynamic
ReLUs into ORT's blocked layout): the deployment form the README recommends. All sessions get the same options:
ORT_ENABLE_ALL, `threads` intra-op threads (default: all logical CPUs), sequential execution.
"""
import collections
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn


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


def make_session(path: Path, threads: Optional[int] = None, profile_prefix: Optional[str] = None,
                 optimized_path: Optional[str] = None):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), session_options(threads, profile_prefix, optimized_path),
                                providers=['CPUExecutionProvider'])


def export_peer(model: nn.Module, path: Path, img_size: int = 224) -> None:
    """A timm model through the same exporter as Mobile-Former: dynamo, dynamic batch, img_size fixed."""
    from .export import dynamic_shapes
    x = torch.randn(2, 3, img_size, img_size)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, dynamic_shapes=dynamic_shapes(fixed_size=True),
                      external_data=False, input_names=['x'], output_names=['logits'])


def export_for_bench(name: str, folder: Path, img_size: int = 224) -> Path:
    """`name` exported to folder/name.onnx (random weights: speed does not depend on them)."""
    import timm
    from timm.utils import reparameterize_model
    from .export import export_onnx
    from .mobileformer import model_cfgs
    path = Path(folder) / f'{name}.onnx'
    model = timm.create_model(name).eval()
    if name in model_cfgs:
        export_onnx(model, path, img_size=img_size, fixed_size=True)
    else:
        export_peer(reparameterize_model(model), path, img_size)
    return path


def optimize_for_batch(path: Path, batch_size: int) -> Tuple[Path, int]:
    """ONNX Runtime's optimized model of `path` with the batch fixed, next to it; and the number of dynamic ReLUs
    moved into the blocked layout (0 for a model without them)."""
    from .export import save_optimized
    optimized = path.with_name(f'{path.stem}_b{batch_size}.ort.onnx')
    return optimized, save_optimized(path, optimized, batch_size)


def make_call(session, batch_size: int, img_size: int) -> Callable[[], None]:
    x = np.random.default_rng(0).standard_normal((batch_size, 3, img_size, img_size), dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def profile_ops(path: Path, batch_size: int, img_size: int, threads: Optional[int] = None,
                runs: int = 20) -> Tuple[List[Tuple[str, float, int]], int]:
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
    times: Dict[str, float] = collections.Counter()
    nodes: Dict[str, set] = collections.defaultdict(set)
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            op = e['args'].get('op_name', '?')
            times[op] += e['dur']
            nodes[op].add(e['name'])
    total = sum(times.values()) or 1.
    rows = sorted(((op, t / total, len(nodes[op])) for op, t in times.items()), key=lambda r: -r[1])
    return rows, sum(len(v) for v in nodes.values())


def format_profile(name: str, rows: List[Tuple[str, float, int]], n_nodes: int, top: int = 12) -> str:
    lines = [f'{name}: {n_nodes} nodes run per call (ORT-optimized graph); kernel time by op type:']
    lines += [f'  {op:<28} {share:6.1%}  {count:4d} nodes' for op, share, count in rows[:top]]
    rest = sum(share for _, share, _ in rows[top:])
    if rest:
        lines.append(f'  {"(others)":<28} {rest:6.1%}')
    return '\n'.join(lines)
