"""An emulated Hugging Face Hub for the pretrained-weights tests (a pytest plugin that tests/conftest.py loads).

The authors' checkpoints are rebuilt from seeded weights (golden variants carry the authors' BatchNorm
statistics and logits), converted with the project's own `convert`, and installed in a private HF cache as
`<HUB_ORG>/mobileformer_<v>.in1k`. `offline_hub` points huggingface_hub at that cache with offline mode on.
huggingface_hub reads `constants.HF_HUB_OFFLINE` / `constants.HF_HUB_CACHE` at call time, so patching them
works whenever huggingface_hub and timm were imported; the env vars are set too, for subprocesses.
"""
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import torch
from huggingface_hub import constants as hf_constants
from official import GOLDEN_VARIANTS, official_state_dict, seeded_state_dict

from timm_mobileformer.convert import convert
from timm_mobileformer.hub import authors_filename, hub_id, install_in_hub_cache
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = tuple(model_cfgs)
# the tests run in pytest-xdist workers (the README's `-n auto`): each worker's share of the cores
WORKER_THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')))
TIMM_TESTS = Path(__file__).parent / 'timm_suite' / 'test_models.py'


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny batches need no threads, and on a shared 2-core machine two OpenMP threads thrash (50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """one_torch_thread for a test; modules opt in with pytest.mark.usefixtures('single_thread')."""
    with one_torch_thread():
        yield


def authors_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """Seeded weights in the authors' layout; golden variants get the authors' BatchNorm statistics."""
    short = variant.split('_', 1)[1]
    return official_state_dict(short)[0] if short in GOLDEN_VARIANTS else seeded_state_dict(short)


def save_authors_checkpoint(state_dict: dict[str, torch.Tensor], variant: str, folder: Path) -> Path:
    """Write a checkpoint the way the authors' training script did (timm CheckpointSaver envelope)."""
    path = folder / authors_filename(variant)
    torch.save({'state_dict': state_dict, 'epoch': 450, 'arch': variant.replace('former_', '_former_')}, path)
    return path


@pytest.fixture(scope='session')
def authors_files(tmp_path_factory) -> dict[str, Path]:
    """variant → the authors'-format `mobile-former-<v>.pth.tar`, for all seven variants."""
    folder = tmp_path_factory.mktemp('authors')
    return {v: save_authors_checkpoint(authors_state_dict(v), v, folder) for v in VARIANTS}


@pytest.fixture(scope='session')
def converted(authors_files, tmp_path_factory) -> dict[str, Path]:
    """variant → the folder `convert` made from the authors' file."""
    folder = tmp_path_factory.mktemp('converted')
    with one_torch_thread():
        return {v: convert(path, folder / v) for v, path in authors_files.items()}


@pytest.fixture(scope='session')
def hub_cache(converted, tmp_path_factory) -> Path:
    """A HF cache holding every converted folder under its Hub id."""
    cache = tmp_path_factory.mktemp('hf_cache')
    for variant, folder in converted.items():
        install_in_hub_cache(folder, hub_id(variant), cache)
    return cache


def go_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """Offline mode on, HF cache at `cache`, for this process and its subprocesses."""
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    return cache


@pytest.fixture
def offline_hub(hub_cache, monkeypatch) -> Path:
    """The emulated Hub: offline, with the converted weights of all seven variants cached."""
    return go_offline(monkeypatch, hub_cache)


@pytest.fixture
def empty_offline_hub(tmp_path, monkeypatch) -> Path:
    """Offline with nothing cached: what a user without network (or before publication) sees."""
    return go_offline(monkeypatch, tmp_path / 'empty_cache')


@pytest.fixture(scope='session')
def timm_tests() -> ModuleType:
    """timm's own tests/test_models.py (placed by tests/fetch_timm_tests.py), loaded as a private module, for
    the tests timm runs only on its own models and for its pretrained tests.

    timm defines its pretrained tests only off GitHub Actions, where they would need the network; here the
    Hub is emulated, so the module is loaded with GITHUB_ACTIONS unset.
    """
    if not TIMM_TESTS.exists():
        pytest.fail(f'{TIMM_TESTS} is missing: run `python tests/fetch_timm_tests.py` first (it needs the package '
                    f'registry)')
    spec = importlib.util.spec_from_file_location('timm_test_models', TIMM_TESTS)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):
        os.environ.pop('GITHUB_ACTIONS', None)
        spec.loader.exec_module(module)
    return module
