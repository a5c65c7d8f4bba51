"""What every command shares: the parser class, argument helpers, number validators.

Every command spells the same thing the same way: `--model` (294m, mobileformer_294m or a tag such as
mobileformer_294m.in1k), `--checkpoint FILE`, `--out`, `--overwrite`, `--img-size`. Bad numbers fail while
parsing, with one line.
"""
import argparse
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Callable, Optional

from ..errors import MobileFormerError, one_line

PROG = 'timm-mobileformer'
MIN_IMG_SIZE = 32  # the smallest input whose last feature map is not empty
MAX_IMG_SIZE = 4096


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: ...)` after every option's help unless the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if '(default' in text or action.default is argparse.SUPPRESS or isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        if action.required:
            return f'{text} (required)'
        if action.default is None or action.default is False:
            default = 'off' if isinstance(action, argparse._StoreTrueAction) else 'none'
            return f'{text} (default: {default})'
        default = action.default
        if isinstance(default, (list, tuple)):
            default = ' '.join(str(d) for d in default)
        return f'{text} (default: {default})'


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `timm-mobileformer <command>: error: ...`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f'{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n')
        sys.exit(2)


# ---- numbers ------------------------------------------------------------------------------------------------

def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def int_in(low: Optional[int] = None, high: Optional[int] = None, what: str = 'a whole number') -> Callable[[str], int]:
    """An argparse type: an int in [low, high]."""
    def parse(text: str) -> int:
        value = _int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                bound = f'of at least {low}'
            elif low is None:
                bound = f'of at most {high}'
            else:
                bound = f'from {low} to {high}'
            raise argparse.ArgumentTypeError(f'{text} is out of range: give {what} {bound}')
        return value
    parse.__name__ = 'int'
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
img_size = int_in(MIN_IMG_SIZE, MAX_IMG_SIZE, 'an image side in pixels')


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f'{text} is out of range: give a number above 0')
    return value


positive_float.__name__ = 'float'


def model_name(text: str) -> str:
    """An argparse type: '294m', 'mobileformer_294m' or 'mobileformer_294m.in1k' → the timm model name."""
    from ..weights import resolve_model_name
    try:
        return resolve_model_name(text)
    except MobileFormerError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


model_name.__name__ = 'model'


def model_or_all(text: str) -> str:
    return 'all' if text == 'all' else model_name(text)


model_or_all.__name__ = 'model'


# ---- arguments shared by commands ----------------------------------------------------------------------------

def add_model_argument(parser: argparse.ArgumentParser, default: Optional[str] = None, many: bool = False,
                       help: Optional[str] = None) -> None:
    text = help or 'Mobile-Former variant: 294m, mobileformer_294m or a tagged name such as mobileformer_294m.in1k'
    if many:
        parser.add_argument('--model', nargs='+', type=model_or_all, default=default, metavar='MODEL',
                            help=text + ", one or more, or 'all'")
    else:
        parser.add_argument('--model', type=model_name, default=default, metavar='MODEL', help=text)


def add_checkpoint_argument(parser: argparse.ArgumentParser, help: Optional[str] = None,
                            random_init: Optional[str] = None) -> None:
    """`--checkpoint FILE` and `--no-ema`; with `random_init` (its help), also `--random-init`, exclusive."""
    group = parser.add_mutually_exclusive_group() if random_init else parser
    group.add_argument(
        '--checkpoint', metavar='FILE',
        help=help or ("local weights: the authors' mobile-former-<v>.pth.tar, a timm train.py checkpoint, a "
                      'model.safetensors or a folder made by convert (default: the Hub weights)'))
    if random_init:
        group.add_argument('--random-init', action='store_true', help=random_init)
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help='with a train.py checkpoint that holds EMA weights, load the plain weights instead '
                             '(default: the EMA weights, as timm does)')


def add_output_argument(parser: argparse.ArgumentParser, metavar: str, help: str, required: bool = True,
                        positional: bool = False) -> None:
    if positional:
        parser.add_argument('out', metavar=metavar, help=help)
    else:
        parser.add_argument('--out', required=required, metavar=metavar, help=help)
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output (default: refuse to touch it)')


def add_img_size_argument(parser: argparse.ArgumentParser, default: Optional[int], help: str,
                          low: int = MIN_IMG_SIZE, high: int = MAX_IMG_SIZE) -> None:
    parser.add_argument('--img-size', type=int_in(low, high, 'an image side in pixels'), default=default,
                        metavar='PX', help=f'{help}, {low} to {high}')


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--threads', type=positive_int, default=None, metavar='N',
                        help="torch CPU threads (default: torch's choice)")


@contextmanager
def warnings_as_lines(category: type[Warning]) -> Iterator[None]:
    """Inside the block, every warning of `category` that library code gives is printed as one line on stderr,
    `warning: <message>`; other warnings are shown as Python shows them."""
    with warnings.catch_warnings():
        warnings.simplefilter('always', category)
        show = warnings.showwarning

        def show_one_line(message, kind, filename, lineno, file=None, line=None) -> None:
            if issubclass(kind, category):
                sys.stderr.write(f'warning: {one_line(message)}\n')
            else:
                show(message, kind, filename, lineno, file, line)
        warnings.showwarning = show_one_line
        yield


def checkpoint_file(path: str) -> str:
    """A converted folder stands for its model.safetensors."""
    from pathlib import Path

    from ..hub import WEIGHTS_FILENAME
    p = Path(path)
    if p.is_dir():
        if (p / WEIGHTS_FILENAME).is_file():
            return str(p / WEIGHTS_FILENAME)
        raise MobileFormerError(f'{path}: a folder without {WEIGHTS_FILENAME}: pass a checkpoint file or a folder '
                                f'made by timm-mobileformer convert')
    return path


def model_names(requested: Optional[Sequence[str]], all_names: Sequence[str]) -> list:
    if not requested or 'all' in requested:
        return list(all_names)
    seen = []
    for name in requested:
        if name not in seen:
            seen.append(name)
    return seen
