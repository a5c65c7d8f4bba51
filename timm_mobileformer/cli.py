"""`timm-mobileformer` / `python -m timm_mobileformer`: the package's command-line front door.

Each subcommand is a thin module in `timm_mobileformer.commands` providing `COMMAND`, `HELP`,
`add_arguments(parser)` and `run(args) -> int`. Expected failures (`MobileFormerError`) print one line,
`timm-mobileformer <command>: error: <what happened and what to do>`, and exit 1; `--debug` (or
TIMM_MOBILEFORMER_DEBUG=1) shows the traceback instead. Ctrl-C and SIGTERM clean up what the command was
writing and exit 130 / 143.
"""
import argparse
import os
import sys
from typing import Optional

from .commands import attention, bench, convert, demo_data, export, fetch_scripts, info, predict, run
from .commands._common import PROG, ArgumentParser, HelpFormatter, one_line
from .errors import MobileFormerError
from .outputs import Terminated, sigterm_raises

COMMANDS = (info, convert, predict, attention, run, demo_data, bench, export, fetch_scripts)
DEBUG_ENV = 'TIMM_MOBILEFORMER_DEBUG'


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description='Mobile-Former image classifiers for timm.')
    parser.add_argument('--debug', action='store_true',
                        help=f'show the traceback of a failure (default: one line; or set {DEBUG_ENV}=1)')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True,
                                       parser_class=ArgumentParser)
    for module in COMMANDS:
        sub = subparsers.add_parser(module.COMMAND, help=module.HELP, description=module.HELP,
                                    formatter_class=HelpFormatter)
        module.add_arguments(sub)
        sub.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                         help='show the traceback of a failure (default: one line)')
        sub.set_defaults(run=module.run)
    return parser


def _fail(command: str, message: str, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f'{PROG} {command}: error: {one_line(message)}\n')
    sys.stderr.flush()
    return code


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, '') not in ('', '0')
    try:
        with sigterm_raises():
            return args.run(args) or 0
    except MobileFormerError as err:
        if debug:
            raise
        return _fail(args.command, str(err), 1)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail(args.command, 'interrupted (Ctrl-C): stopped, and removed what was half-written', 130)
    except Terminated:
        if debug:
            raise
        return _fail(args.command, 'terminated (SIGTERM): stopped, and removed what was half-written', 143)
    except OSError as err:  # the machine's, not the package's: a full disk, a permission, a vanished file
        if debug:
            raise
        where = f' {err.filename}' if getattr(err, 'filename', None) else ''
        return _fail(args.command, f'{err.strerror or err}{":" if where else ""}{where} ({type(err).__name__}; '
                                   f'run with --debug for the traceback)', 1)


if __name__ == '__main__':
    sys.exit(main())
