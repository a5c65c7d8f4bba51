"""What every test module shares: the models registered before any module builds its model lists, the emulated
Hub (conftest_hub), files a user might hand the commands, built once per test session, and timm's own suite
(tests/timm_suite/test_models.py, fetched by tests/fetch_timm_tests.py) kept to the mobileformer_* cases."""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_mobileformer  # noqa: F401  (registers the models)

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
TIMM_SUITE = TESTS / 'timm_suite'

pytest.register_assert_rewrite('cli_util', 'conftest_hub')
from conftest_hub import WORKER_THREADS, one_torch_thread  # noqa: E402  (needs TESTS on sys.path)

pytest_plugins = ('conftest_hub',)  # authors_files, converted, offline_hub, empty_offline_hub, single_thread...

# timm's pretrained tests need the emulated Hub: test_hub.py runs them for all seven variants against it
HUB_TESTS = ('test_model_load_pretrained', 'test_model_features_pretrained')
SCRIPTS = ('train.py', 'validate.py', 'benchmark.py', 'inference.py')
SIX_CLASS_NAMES = ('circle', 'ring', 'triangle', 'square', 'star', 'cross')


def pytest_configure(config):
    """Torch's threads: this worker's share of the cores (two workers of two threads on two cores thrash)."""
    torch.set_num_threads(WORKER_THREADS)


def pytest_collection_modifyitems(config, items):
    """timm's test_models.py parametrizes over every registered model: run only ours."""
    keep, drop = [], []
    for item in items:
        in_timm_suite = Path(str(item.fspath)).parent == TIMM_SUITE
        ours = 'mobileformer' in item.nodeid and item.originalname not in HUB_TESTS
        (drop if in_timm_suite and not ours else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class ShellPayload:
    """A malicious pickle: unpickling it runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def write_images(folder: Path) -> dict[str, Path]:
    """A PNG and a JPEG photo (64x48), a broken PNG and a text file."""
    Image.new('RGB', (64, 48), (30, 140, 200)).save(folder / 'photo.png')
    Image.new('RGB', (64, 48), (200, 40, 30)).save(folder / 'photo.jpg')
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really' * 10)
    (folder / 'notes.txt').write_text('just text\n')
    return dict(png=folder / 'photo.png', jpg=folder / 'photo.jpg', broken=folder / 'broken.png',
                text=folder / 'notes.txt')


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """A random-init 26m checkpoint (`mf26`) and its damaged forms (empty, random bytes, truncated, a NaN and
    an inf weight, a shell-command pickle), and a 6-class fine-tuned one as timm's train.py writes it (`six`)."""
    (folder / 'empty.pth.tar').write_bytes(b'')
    (folder / 'random.pth.tar').write_bytes(np.random.default_rng(0).bytes(4096))
    torch.manual_seed(0)
    with one_torch_thread():
        state_dict = timm.create_model('mobileformer_26m').state_dict()
        torch.save({'state_dict': state_dict, 'epoch': 3}, folder / 'mf26.pth.tar')
        data = (folder / 'mf26.pth.tar').read_bytes()
        (folder / 'truncated.pth.tar').write_bytes(data[:len(data) // 2])
        first_weight = next(key for key, tensor in state_dict.items() if tensor.is_floating_point())
        for name, value in (('nan', float('nan')), ('inf', float('inf'))):
            damaged = dict(state_dict, **{first_weight: state_dict[first_weight].clone().fill_(value)})
            torch.save({'state_dict': damaged}, folder / f'{name}.pth.tar')
        torch.save({'state_dict': state_dict, 'hook': ShellPayload(folder / 'payload-ran')},
                   folder / 'malicious.pth.tar')
        six = timm.create_model('mobileformer_26m', num_classes=len(SIX_CLASS_NAMES)).state_dict()
        torch.save({'epoch': 9, 'arch': 'mobileformer_26m', 'state_dict': six, 'state_dict_ema': six,
                    'args': argparse.Namespace(model='mobileformer_26m'), 'metric': np.float64(50.0)},
                   folder / 'six.pth.tar')
    return {path.name.split('.')[0]: path for path in folder.glob('*.pth.tar')}


def write_timm_repo_stand_in(folder: Path) -> Path:
    """timm's repository as `fetch-scripts` reads it (`<url>/<ref>/<script>`): a tag for the installed timm with
    the four scripts, and a tag `vbroken` whose "scripts" are an HTML page."""
    for ref, text in ((f'v{timm.__version__}', 'print("{name}")\n'), ('vbroken', '<html>this is not python\n')):
        (folder / ref).mkdir(parents=True)
        for name in SCRIPTS:
            (folder / ref / name).write_text(text.format(name=name))
    return folder


@pytest.fixture(scope='session')
def user_files(tmp_path_factory) -> dict[str, Path]:
    """Read-only files a user might hand the commands, all in `user_files['folder']`: images (png, jpg, broken,
    text), checkpoints (mf26, empty, random, truncated, nan, inf, malicious, six), class-name lists (six_names,
    five_names), a stand-in of timm's repository (repo), and the marker a malicious pickle would leave (marker).
    Tests check the folder's bytes are unchanged after their command ran."""
    folder = tmp_path_factory.mktemp('user_files')
    (folder / 'six.txt').write_text('\n'.join(SIX_CLASS_NAMES) + '\n')
    (folder / 'five.txt').write_text('\n'.join(SIX_CLASS_NAMES[:5]) + '\n')
    return dict(write_images(folder), **write_checkpoints(folder), six_names=folder / 'six.txt',
                five_names=folder / 'five.txt', repo=write_timm_repo_stand_in(folder / 'timm-repo'),
                marker=folder / 'payload-ran', folder=folder)
