"""`timm-mobileformer fetch-scripts`: timm's train.py and friends for the installed timm, from a local stand-in
of timm's repository (a file:// URL, and the same folder served over HTTP on localhost)."""
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
from cli_util import error_line, run_cli
from conftest import SCRIPTS


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging each request to stderr (where the command's one error line goes)."""

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def served_repo(user_files) -> Iterator[str]:
    """The stand-in repository served over HTTP on localhost: its URL."""
    handler = functools.partial(QuietFileHandler, directory=str(user_files['repo']))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_fetches_the_four_scripts_of_the_installed_timm(user_files, tmp_path):
    run = run_cli(['fetch-scripts', str(tmp_path / 'scripts'), '--url', user_files['repo'].as_uri()])
    assert run.code == 0, run.err
    assert sorted(p.name for p in (tmp_path / 'scripts').iterdir()) == sorted(SCRIPTS)
    assert f'/v{timm.__version__}/train.py' in run.out


def test_fetches_over_http(served_repo, tmp_path):
    run = run_cli(['fetch-scripts', str(tmp_path), '--url', served_repo])
    assert run.code == 0, run.err
    assert (tmp_path / 'inference.py').read_text() == 'print("inference.py")\n'


def test_http_not_found_is_one_line_and_leaves_nothing(served_repo, tmp_path: Path):
    message = error_line(['fetch-scripts', str(tmp_path / 'x'), '--url', served_repo, '--ref', 'v0.0.0'])
    assert 'HTTP 404' in message and not (tmp_path / 'x').exists()
