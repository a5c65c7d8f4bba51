"""`timm-mobileformer info`: the machine (whether it computes bf16 natively), then variants built and measured
live, beside the paper's numbers."""
import argparse

from ..info import VARIANTS, format_table, measure
from ..machine import describe, summary_line
from ._common import add_img_size_argument, add_model_argument, model_names

COMMAND = 'info'
HELP = ('Print the machine (CPU, vector extensions, native bf16, package version), then build Mobile-Former '
        'variants and print params, MAdds, output shape and feature strides.')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, many=True, default=['all'])
    add_img_size_argument(parser, 224, 'square input size for MAdds and shapes')


def run(args: argparse.Namespace) -> int:
    print(f'machine: {summary_line(describe())}', flush=True)
    rows = []
    for name in model_names(args.model, VARIANTS):
        print(f'measuring {name} ...', flush=True)
        rows.append(measure(name.partition('.')[0], args.img_size))
    print(format_table(rows))
    return 0
