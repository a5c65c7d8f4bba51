"""`timm-mobileformer attention`: draw the bridges' cross-attention over an image as a PNG grid."""
import argparse

from ..attention import RandomWeightsWarning, draw_attention, save_png
from ..hub import WeightsUnreachableError
from ..outputs import check_output, staged
from ..predict import DEFAULT_VARIANT
from ._common import (
    add_checkpoint_argument,
    add_model_argument,
    add_output_argument,
    checkpoint_file,
    int_in,
    warnings_as_lines,
)

COMMAND = 'attention'
HELP = 'Draw the cross-attention of every global token over an image, one row per block, one column per token.'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('image', metavar='IMAGE', help='image file to look at')
    add_output_argument(parser, 'FILE.png', 'the PNG file to write (not the input image)')
    add_model_argument(parser, help=f'Mobile-Former variant, e.g. 294m or mobileformer_294m (default: detected '
                                    f'from --checkpoint, else {DEFAULT_VARIANT})')
    add_checkpoint_argument(parser, random_init='skip the Hub and draw the untrained network (also what happens, '
                                                'with a warning, when the Hub weights are unreachable)')
    parser.add_argument('--blocks', nargs='+', metavar='B',
                        help="block indices, 'merge' (the bridge before the head) or 'all' "
                             '(default: the last block of each stride, then merge)')
    parser.add_argument('--bridge', choices=('m2f', 'f2m'), default='m2f',
                        help='m2f: each token over the pixels; f2m: each pixel over the tokens')
    parser.add_argument('--per-head', action='store_true', help='one column per token and head (default: mean)')
    parser.add_argument('--cell-size', type=int_in(16, 1024, 'a cell side in pixels'), default=128, metavar='PX',
                        help='pixels per grid cell, 16 to 1024')


def run(args: argparse.Namespace) -> int:
    out = check_output(args.out, suffixes=('.png',), inputs=[args.image, args.checkpoint], overwrite=args.overwrite)
    checkpoint = checkpoint_file(args.checkpoint) if args.checkpoint else None
    try:
        with warnings_as_lines(RandomWeightsWarning):
            grid, title, rows = draw_attention(args.image, args.model, checkpoint, args.random_init, args.blocks,
                                               args.bridge, args.per_head, args.cell_size, args.use_ema)
    except WeightsUnreachableError as err:  # only when the fallback itself failed
        raise type(err)(err.cli_message('--checkpoint FILE', 'pass --random-init'), err.variant, err.repo_id,
                        err.reason) from None
    with staged(out, overwrite=args.overwrite) as tmp:
        save_png(grid, tmp)
    row_names = ', '.join('merge' if r == 'merge' else f'block {r.rpartition(".")[2]}' for r in rows)
    print(f'wrote {out} ({grid.width}x{grid.height} px, rows: {row_names})')
    print(title)
    return 0
