"""timm's command-line scripts (train.py, validate.py, benchmark.py, inference.py) for the installed timm.

They are in neither timm's wheel nor its sdist; `fetch_scripts` downloads them from timm's own repository
at the tag of the installed version (`v<timm.__version__>`), checks that each is Python, and writes them into
a folder all together or not at all. Run them with `timm-mobileformer run DIR/train.py ...`, which registers
the Mobile-Former models first.
"""
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional, Union

import timm

from .errors import MobileFormerError, one_line
from .outputs import check_output, staged

__all__ = ['SCRIPTS', 'DEFAULT_BASE_URL', 'BASE_URL_ENV', 'default_ref', 'fetch_scripts']

SCRIPTS = ('train.py', 'validate.py', 'benchmark.py', 'inference.py')
DEFAULT_BASE_URL = 'https://raw.githubusercontent.com/huggingface/pytorch-image-models'
BASE_URL_ENV = 'TIMM_MOBILEFORMER_SCRIPTS_URL'
TIMEOUT_S = 30


def default_ref() -> str:
    """The git tag of the installed timm, e.g. 'v1.0.31'."""
    return f'v{timm.__version__}'


def base_url() -> str:
    return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise MobileFormerError(f'{url}: not found (HTTP 404): timm has no such file at that tag; give '
                                    f'another --ref, e.g. main') from err
        raise MobileFormerError(f'{url}: download failed (HTTP {err.code}): try again later') from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', err)
        if isinstance(reason, FileNotFoundError) or 'No such file' in str(reason):
            raise MobileFormerError(f'{url}: not found: timm has no such file at that tag; give another '
                                    f'--ref') from err
        raise MobileFormerError(f'{url}: download failed ({one_line(reason)}): check the network '
                                f'(or HTTPS proxy), or copy the scripts from a timm checkout') from err


def fetch_scripts(
        folder: Union[str, os.PathLike],
        ref: Optional[str] = None,
        url: Optional[str] = None,
        names: Sequence[str] = SCRIPTS,
        overwrite: bool = False,
        log: Callable[[str], None] = lambda message: None,
) -> dict[str, Path]:
    """Download timm's scripts at `ref` (default: the installed version's tag) into `folder`; return name →
    path. Existing files are refused unless `overwrite`; nothing is written unless every script arrived and
    compiles."""
    folder = Path(folder)
    ref = ref or default_ref()
    url = (url or base_url()).rstrip('/')
    if folder.exists() and not folder.is_dir():
        raise MobileFormerError(f'{folder} is an existing file: give a folder')
    targets = {name: check_output(folder / name, suffixes=('.py',), overwrite=overwrite, option='') for name in names}
    sources = {}
    for name in names:
        source_url = f'{url}/{ref}/{name}'
        log(f'downloading {source_url}')
        data = _download(source_url)
        try:
            compile(data, name, 'exec')
        except (SyntaxError, ValueError) as err:
            raise MobileFormerError(f'{source_url}: not a Python script ({type(err).__name__}): check --url and '
                                    f'--ref') from err
        sources[name] = data
    with ExitStack() as stack:  # every file moves into place only when all are written
        for name, data in sources.items():
            tmp = stack.enter_context(staged(targets[name], overwrite=overwrite))
            tmp.write_bytes(data)
    for name in names:
        log(f'wrote {targets[name]}')
    return targets
