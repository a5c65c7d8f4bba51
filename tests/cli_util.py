"""Running `timm-mobileformer` in-process and reading its one-line error."""
from typing import List, Tuple

import pytest

from timm_mobileformer.cli import main

PROG = 'timm-mobileformer'


def run_cli(argv: List[str], capsys: pytest.CaptureFixture) -> Tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI run in this process; a usage error's SystemExit is caught."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(argv: List[str], capsys: pytest.CaptureFixture, code: int = 1) -> str:
    """The CLI's one error line for argv, after checking its form: exactly one non-empty stderr line,
    `timm-mobileformer <command>: error: ...`, no traceback, the expected exit code."""
    got, _, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith('warning: ')]
    command = next(a for a in argv if not a.startswith('-'))
    assert 'Traceback' not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f'{PROG} {command}: error: '), err
    assert got == code, (got, err)
    return lines[0]


def error_line(argv: List[str], code: int = 1) -> str:
    """cli_error without capsys: the message after `timm-mobileformer <command>: error: `."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            got = main(argv)
        except SystemExit as exc:
            got = exc.code
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith('warning: ')]
    command = next(a for a in argv if not a.startswith('-'))
    assert 'Traceback' not in text and len(lines) == 1, text
    prefix = f'{PROG} {command}: error: '
    assert lines[0].startswith(prefix), text
    assert got == code, (got, text)
    return lines[0][len(prefix):]
