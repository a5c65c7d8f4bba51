"""Where the time goes along ONNX Runtime's optimized graph: its prefixes, cut after each `ReorderOutput`.

    python benchmarks/ort_spans.py --model 52m --batch-size 1 --rounds 15

The variant is exported like `bench --runtime onnxruntime` exports it (size fixed) and optimized by ORT with the
batch fixed (`ort.optimize_for_batch`). Each prefix of that graph, cut after a `ReorderOutput` (about one
Mobile-Former block apart) and after the last node, keeps every tensor a later node reads as an output, so
nothing in it is dead. The prefixes run in their own sessions (deploy/ort.py's options), alternating, 20 calls a
round; per prefix the 10th percentile and the median of all its calls are printed, and the span between one
cut and the next as the difference of the 10th percentiles. Used for "Where the time goes, span by span" in
docs/deploy.md.
"""
import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer.deploy.onnx import export_for_bench
from timm_mobileformer.deploy.ort import make_session, optimize_for_batch

if TYPE_CHECKING:
    import onnx

CALLS_PER_ROUND = 20


def prefix(model: 'onnx.ModelProto', end: int) -> 'onnx.ModelProto':
    """The first `end` nodes of `model`, every tensor that a later node or the graph output reads an output."""
    import onnx
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    nodes = list(graph.node)
    read_later = {name for n in nodes[end:] for name in n.input} | {o.name for o in graph.output}
    outputs = [name for n in nodes[:end] for name in n.output if name in read_later]
    used = {name for n in nodes[:end] for name in n.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.node[:], graph.output[:], graph.initializer[:]
    graph.node.extend(nodes[:end])
    graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs)
    graph.initializer.extend(initializers)
    return cut


def main(argv: Optional[list[str]] = None) -> None:
    import onnx
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='52m', help='Mobile-Former variant, e.g. 52m or mobileformer_294m')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    name = args.model if args.model.startswith('mobileformer_') else f'mobileformer_{args.model}'
    with tempfile.TemporaryDirectory() as tmp:
        optimized, _ = optimize_for_batch(export_for_bench(name, Path(tmp), args.img_size), args.batch_size)
        model = onnx.load(str(optimized))
        nodes = list(model.graph.node)
        ends = [i + 1 for i, n in enumerate(nodes) if n.op_type == 'ReorderOutput'] + [len(nodes)]
        sessions = []
        for end in ends:
            path = Path(tmp) / f'prefix_{end}.onnx'
            onnx.save(prefix(model, end), str(path))
            sessions.append(make_session(path, args.threads))
    x = np.random.default_rng(0).standard_normal((args.batch_size, 3, args.img_size, args.img_size), dtype=np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    times = [[] for _ in sessions]
    for _ in range(args.rounds):
        for session, feed, calls in zip(sessions, feeds, times):
            session.run(None, feed)
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                session.run(None, feed)
                calls.append(time.perf_counter() - start)
    print(f'{name}, batch {args.batch_size}, {args.img_size} px: {len(nodes)} nodes; ms per call')
    previous = 0.
    for end, calls in zip(ends, times):
        p10, median = np.percentile(calls, 10) * 1e3, np.median(calls) * 1e3
        last = nodes[end - 1]
        print(f'  nodes[:{end:4d}] (to {last.op_type} {last.name[-28:]:28s}) p10 {p10:6.3f}  median {median:6.3f}'
              f'  span {p10 - previous:+.3f}')
        previous = p10


if __name__ == '__main__':
    main()
