"""Running `timm-mobileformer` in-process, reading its one-line error, and checking what it left on disk."""
import hashlib
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple

from timm_mobileformer.cli import COMMANDS, main

PROG = 'timm-mobileformer'
WARNING = 'warning: '


class CliRun(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(argv: list[str]) -> CliRun:
    """The CLI run in this process: its exit code (a usage error's SystemExit caught), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return CliRun(code, out.getvalue(), err.getvalue())


def error_prefix(argv: list[str]) -> str:
    """`timm-mobileformer <command>: error: `, or `timm-mobileformer: error: ` when there is no such command."""
    command = next(a for a in argv if not a.startswith('-'))
    return f'{PROG} {command}: error: ' if command in {m.COMMAND for m in COMMANDS} else f'{PROG}: error: '


def error_line(argv: list[str], code: int = 1, allow_warnings: bool = True) -> str:
    """The message of the CLI's one error line for argv (after `timm-mobileformer <command>: error: `), once its
    form is checked: the expected exit code, exactly one non-empty stderr line (besides `warning: ` lines when
    allowed), the prefix, no traceback, and no advice to unpickle with weights_only=False."""
    run = run_cli(argv)
    lines = [line for line in run.err.splitlines()
             if line.strip() and not (allow_warnings and line.startswith(WARNING))]
    prefix = error_prefix(argv)
    assert 'Traceback' not in run.err and 'weights_only=False' not in run.err, run.err
    assert len(lines) == 1 and lines[0].startswith(prefix), run.err
    assert run.code == code, (run.code, run.err)
    return lines[0][len(prefix):]


def folder_state(*roots: Path) -> dict[str, str]:
    """Every file, folder and link under the roots (hidden ones too): path → sha256 of its bytes, 'dir' or the
    link's target; equal before and after a command when it changed, added and left nothing there."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob('*')):
            if path.is_symlink():
                found[str(path)] = 'link ' + os.readlink(path)
            else:
                found[str(path)] = 'dir' if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found
