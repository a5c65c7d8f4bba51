"""`timm-mobileformer predict`: top-k classes of images, with the weights' own preprocessing."""
import argparse
import sys

from ..hub import WeightsUnreachableError
from ..predict import (
    DEFAULT_VARIANT,
    TOP_K,
    format_prediction,
    labeller,
    load_model,
    predict,
    read_class_names,
    read_image,
)
from ._common import add_checkpoint_argument, add_model_argument, add_threads_argument, checkpoint_file, positive_int

COMMAND = 'predict'
HELP = ('Print the top classes of images, with the Hub weights or any checkpoint: the authors\', a converted '
        'folder, or your own train.py checkpoint.')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files (JPEG, PNG, ...)')
    add_model_argument(parser, help=f'Mobile-Former variant, e.g. 294m or mobileformer_294m (default: detected '
                                    f'from --checkpoint, else {DEFAULT_VARIANT})')
    add_checkpoint_argument(parser, random_init='run untrained (random) weights, e.g. to try the command without '
                                                'any weights')
    parser.add_argument('--class-names', metavar='FILE',
                        help='text file with one class name per line, in class-index order (default: ImageNet '
                             'names for 1000 classes, else "class <i>")')
    parser.add_argument('--top-k', type=positive_int, default=TOP_K, metavar='K',
                        help='classes to print per image, at most the number of classes')
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    images = [read_image(path) for path in args.images]
    checkpoint = checkpoint_file(args.checkpoint) if args.checkpoint else None
    try:
        model = load_model(args.model, checkpoint, args.use_ema, args.random_init)
    except WeightsUnreachableError as err:
        raise type(err)(err.cli_message('--checkpoint FILE', 'pass --random-init to try the command with '
                                                             'untrained weights'),
                        err.variant, err.repo_id, err.reason) from None
    names = read_class_names(args.class_names, model.num_classes) if args.class_names else None
    if args.random_init:
        print('warning: --random-init: untrained weights, the classes below are meaningless', file=sys.stderr)
    labels = labeller(model.num_classes, names)
    for path, prediction in zip(args.images, predict(model, images, args.top_k)):
        print(format_prediction(path, prediction, labels))
    return 0
