"""Where an fp32 XNNPACK program of Mobile-Former spends its time, by the network's parts, and how fast it would be
if only its convs and linears took time.

Every op of a call, as ExecuTorch's profiler sees it (ETDump), in execution order; XNNPACK's Fully Connected ops
are matched in order to the linears and 1x1 convs of the graph the program was lowered from, so that each is
known as a 1x1 conv, a token-side linear or the classifier head. The program and its peer (stock path) are then
timed in alternating rounds (the bench's `run_cell`), and the convs and linears alone (scaled from profiled to
real time) give the speed per MAdd the program would have if everything else (bridges' attention, dynamic ReLUs,
layout changes, norms) were free.

    python benchmarks/xnnpack_profile.py --model 294m --peer mobilenetv3_large_100 --threads 1 --out FILE
"""
import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

import timm
import torch
from results_file import add_out_arguments, check_out, run, write_results

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer import machine
from timm_mobileformer.bench import ForeignLoad, run_cell
from timm_mobileformer.deploy import executorch
from timm_mobileformer.errors import MobileFormerError
from timm_mobileformer.info import count_madds

GEMM = 'Fully Connected (NC, F32) GEMM'
PARTS = {  # XNNPACK op type -> part of the network, for the ops that are not matched to a graph node
    'Convolution (NHWC, F32) DWConv': 'depthwise convs',
    'Convolution (NHWC, F32) IGEMM': 'stem conv',
}
COMPUTE = ('1x1 convs', 'token-side linears', 'classifier head', 'depthwise convs', 'stem conv')


def gemm_parts(program: torch.export.ExportedProgram) -> list[str]:
    """The part of the network of each linear and 1x1 conv of `program`, in graph order (the head's two linears
    are the last ones)."""
    parts = []
    for node in program.graph.nodes:
        if node.target == torch.ops.aten.linear.default:
            parts.append('token-side linears')
        elif node.target == torch.ops.aten.conv2d.default and node.args[1].meta['val'].shape[-2:] == (1, 1):
            parts.append('1x1 convs')
    parts[-2:] = ['classifier head'] * 2
    return parts


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='294m')
    parser.add_argument('--peer', default='mobilenetv3_large_100')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=8)
    add_out_arguments(parser)
    args = parser.parse_args(argv)
    overwrite = args.overwrite
    out = check_out(args.out, overwrite)
    name = f'mobileformer_{args.model}'
    x = torch.randn(1, 3, 224, 224)
    models = {name: timm.create_model(name).eval(), args.peer: timm.create_model(args.peer).eval()}
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for model_name, model in models.items():
            paths[model_name] = Path(folder) / f'{model_name}.pte'
            executorch.export_executorch(model, paths[model_name])
        events = executorch.op_events(paths[name], 1, 224, args.threads, runs=30)
        executorch.set_threads(args.threads)
        programs = {n: executorch.load_program(p) for n, p in paths.items()}
        load = ForeignLoad()
        cell = run_cell(list(paths), 'infer', 1, args.rounds, 0.5, print,
                        lambda n: executorch.make_call(programs[n], 1, 224))
        other_cpu = load.share()
    wall = {n: 1e3 / statistics.median(img_s) for n, img_s in cell.rounds.items()}
    gemms = gemm_parts(torch.export.export(executorch.runtime_form(models[name]), (x,)))
    gemm_events = [ms for op_type, ms in events if op_type == GEMM]
    if len(gemm_events) != len(gemms):
        raise MobileFormerError(f'{len(gemm_events)} Fully Connected ops ran, the graph has {len(gemms)} linears '
                                f'and 1x1 convs: they cannot be matched')
    by_part: dict[str, float] = collections.Counter()
    for part, ms in zip(gemms, gemm_events):
        by_part[part] += ms
    for op_type, ms in events:
        if op_type != GEMM:
            by_part[PARTS.get(op_type, 'everything else')] += ms
    profiled = sum(by_part.values())
    scale = wall[name] / profiled  # the profiler's own cost, spread evenly
    compute_ms = sum(by_part[part] for part in COMPUTE) * scale
    madds = {n: count_madds(m, (3, 224, 224)) for n, m in models.items()}

    def per_madd(ms: float) -> float:
        return (madds[name] / ms) / (madds[args.peer] / wall[args.peer])

    results = {
        'machine': machine.describe(), 'command': 'python benchmarks/xnnpack_profile.py ' + ' '.join(argv),
        'threads': args.threads, 'other processes, share of the CPUs': other_cpu, 'madds': madds,
        'ms per image': {n: round(t, 3) for n, t in wall.items()},
        'parts': {part: {'ms': round(ms * scale, 3), 'share': round(ms / profiled, 4)}
                  for part, ms in sorted(by_part.items(), key=lambda kv: -kv[1])},
        'per MAdd vs peer': round(per_madd(wall[name]), 3),
        'per MAdd vs peer, convs and linears only': round(per_madd(compute_ms), 3),
    }
    write_results(out, results, overwrite)
    print(json.dumps({k: v for k, v in results.items() if k != 'machine'}, indent=2))


if __name__ == '__main__':
    run(main)
