"""`timm-mobileformer demo-data DIR`: a small shape-classification set in ImageFolder layout."""
import argparse

from ..demo_data import CLASSES, MIN_SIZE, make_demo_data
from ._common import int_in, non_negative_int, positive_int

COMMAND = 'demo-data'
HELP = 'Write a small shape-classification image set (ImageFolder layout: train/ and validation/) to DIR.'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('out', metavar='DIR', help='folder to create (it must not exist, or be empty, unless '
                                                   '--overwrite)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output (default: refuse to touch it)')
    parser.add_argument('--seed', type=non_negative_int, default=0, metavar='N',
                        help='the same seed gives byte-identical files')
    parser.add_argument('--train-per-class', type=positive_int, default=800, metavar='N',
                        help='training images per class')
    parser.add_argument('--val-per-class', type=positive_int, default=100, metavar='N',
                        help='validation images per class')
    parser.add_argument('--img-size', '--size', dest='img_size', type=int_in(MIN_SIZE, 1024, 'an image side'),
                        default=64, metavar='PX', help=f'image side in pixels, {MIN_SIZE} to 1024 (--size is '
                                                      f'the old spelling)')


def run(args: argparse.Namespace) -> int:
    root = make_demo_data(args.out, args.seed, args.train_per_class, args.val_per_class, args.img_size,
                          overwrite=args.overwrite)
    print(f'wrote {len(CLASSES)} classes ({", ".join(CLASSES)}) x {args.train_per_class} train / '
          f'{args.val_per_class} validation images of {args.img_size}x{args.img_size} px to {root}')
    return 0
