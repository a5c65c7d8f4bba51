"""`timm-mobileformer bench`: throughput of Mobile-Former variants next to timm peers; JSON and a PNG chart."""
import argparse

import torch

from ..bench import DEFAULT_MODES, DEFAULT_PEERS, MODES, RUNTIMES, benchmark
from ..deploy.executorch import QUANTIZE
from ..mobileformer import model_cfgs
from ._common import (
    add_img_size_argument,
    add_model_argument,
    add_output_argument,
    add_threads_argument,
    model_names,
    positive_float,
    positive_int,
)

COMMAND = 'bench'
HELP = 'Time Mobile-Former variants next to timm peers (img/s, ratios per MAdd); write bench.json and bench.png.'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, many=True, default=['mobileformer_294m'])
    add_output_argument(parser, 'DIR', 'folder for bench.json and bench.png (it must not exist, or be empty, '
                                       'unless --overwrite)')
    parser.add_argument('--peers', nargs='*', default=list(DEFAULT_PEERS), metavar='NAME',
                        help='timm models to compare with; --peers alone for none')
    parser.add_argument('--batch-sizes', nargs='+', type=positive_int, default=[1, 32], metavar='N',
                        help='batch sizes to time')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(DEFAULT_MODES),
                        help='what to time; compile costs minutes of compiling')
    parser.add_argument('--rounds', type=positive_int, default=5, metavar='N', help='alternating rounds per cell')
    parser.add_argument('--round-time', type=positive_float, default=1.0, metavar='S',
                        help='seconds per model per round (at least 3 calls)')
    add_img_size_argument(parser, 224, 'square input size')
    add_threads_argument(parser)
    parser.add_argument('--chart-mode', choices=MODES, default='fused', help='the mode the chart plots')
    parser.add_argument('--runtime', choices=RUNTIMES, default='torch',
                        help='torch: time --modes in PyTorch; onnxruntime: export every model to ONNX (Mobile-Former '
                             'through the package export) and time ONNX Runtime sessions; executorch: lower every '
                             'model to an ExecuTorch program for XNNPACK and time it (--modes ignored by both)')
    parser.add_argument('--profile', action='store_true',
                        help="with --runtime onnxruntime or executorch, print the runtime's own profile (time by op "
                             'type) for every model and batch size (default: off)')
    parser.add_argument('--quantize', choices=QUANTIZE, default=None,
                        help='with --runtime executorch: int8 programs (static, per-channel weights) (default: fp32)')
    parser.add_argument('--calibration', metavar='DIR', default=None,
                        help='with --quantize: the images every model is calibrated on (default: images that '
                             'demo-data draws)')


def run(args: argparse.Namespace) -> int:
    """`benchmark` checks every argument (output folder, peers, runtime) before any work."""
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [n.partition('.')[0] for n in model_names(args.model, tuple(model_cfgs))]
    settings = {k: v for k, v in vars(args).items() if k != 'run'}
    options = {k: getattr(args, k) for k in ('quantize', 'calibration') if getattr(args, k) is not None}
    benchmark(variants, args.out, args.peers, args.batch_sizes, args.modes, args.rounds, args.round_time,
              args.img_size, args.chart_mode, overwrite=args.overwrite, log=lambda s: print(s, flush=True),
              settings=settings, runtime=args.runtime, profile=args.profile, threads=args.threads,
              runtime_options=options)
    return 0
