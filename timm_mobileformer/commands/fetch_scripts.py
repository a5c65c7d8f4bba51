"""`timm-mobileformer fetch-scripts DIR`: timm's train.py, validate.py, benchmark.py, inference.py."""
import argparse

from ..scripts import BASE_URL_ENV, DEFAULT_BASE_URL, SCRIPTS, default_ref, fetch_scripts

COMMAND = 'fetch-scripts'
HELP = (f"Download timm's {', '.join(SCRIPTS)} for the installed timm version (they are in neither its wheel "
        'nor its sdist) into DIR; run them with timm-mobileformer run DIR/train.py ...')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('out', metavar='DIR', help='folder for the scripts (created if needed)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace scripts already in DIR (default: refuse to touch them)')
    parser.add_argument('--ref', default=default_ref(), metavar='TAG',
                        help="git tag or branch of timm's repository (the installed timm's tag)")
    parser.add_argument('--url', default=None, metavar='URL',
                        help=f'where timm\'s repository files are served, <URL>/<TAG>/train.py (default: '
                             f'${BASE_URL_ENV}, else {DEFAULT_BASE_URL})')


def run(args: argparse.Namespace) -> int:
    fetch_scripts(args.out, args.ref, args.url, overwrite=args.overwrite, log=print)
    print(f'run them with: timm-mobileformer run {args.out}/train.py ... (the Mobile-Former models registered)')
    return 0
