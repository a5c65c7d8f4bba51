"""Every command and the model API against bad inputs and faults, as a demanding new user would try them.

Each case asserts the exit code, exactly one line of error (`timm-mobileformer <command>: error: ...`) and no
traceback, input files byte-identical afterwards, and no new file or folder left (staging names included).
Most cases run in-process through `cli.main`; the signal cases start the real command, wait for its staging
name, and send SIGTERM or SIGINT.
"""
import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from cli_util import PROG, run_cli
from timm_mobileformer.cli import main
from timm_mobileformer.commands._common import PROG as COMMON_PROG
from timm_mobileformer.errors import MobileFormerError
from timm_mobileformer.outputs import STAGING_MARK

from conftest_hub import one_torch_thread  # noqa: E402

pytest_plugins = ('conftest_hub',)  # single_thread
pytestmark = pytest.mark.usefixtures('single_thread')
REPO_ROOT = Path(__file__).parent.parent


def go_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """huggingface_hub offline with its cache at `cache`, here and in subprocesses (as conftest_hub does)."""
    from huggingface_hub import constants as hf_constants
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))


class Payload:
    """A malicious pickle: unpickling it runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> Dict[str, Path]:
    """Read-only inputs shared by every case (their bytes are checked after each one)."""
    folder = tmp_path_factory.mktemp('inputs')
    paths = {}
    Image.new('RGB', (64, 48), (30, 140, 200)).save(folder / 'photo.png')
    Image.new('RGB', (64, 48), (200, 40, 30)).save(folder / 'photo.jpg')
    paths.update(png=folder / 'photo.png', jpg=folder / 'photo.jpg')
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really' * 10)
    (folder / 'empty.pth.tar').write_bytes(b'')
    (folder / 'random.pth.tar').write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / 'notes.txt').write_text('just text\n')
    paths.update(broken=folder / 'broken.png', empty=folder / 'empty.pth.tar', random=folder / 'random.pth.tar',
                 text=folder / 'notes.txt')
    torch.manual_seed(0)
    with one_torch_thread():
        model = timm.create_model('mobileformer_26m')
        state_dict = model.state_dict()
        torch.save({'state_dict': state_dict, 'epoch': 3}, folder / 'mf26.pth.tar')
        data = (folder / 'mf26.pth.tar').read_bytes()
        (folder / 'truncated.pth.tar').write_bytes(data[:len(data) // 2])
        for name, value in (('nan', float('nan')), ('inf', float('inf'))):
            damaged = dict(state_dict)
            key = 'blocks.1.mobile.conv_pw.weight' if 'blocks.1.mobile.conv_pw.weight' in damaged else \
                next(k for k, v in damaged.items() if v.is_floating_point())
            damaged[key] = damaged[key].clone().fill_(value)
            torch.save({'state_dict': damaged}, folder / f'{name}.pth.tar')
            paths[f'{name}_key'] = key
        marker = folder / 'payload-ran'
        torch.save({'state_dict': state_dict, 'hook': Payload(marker)}, folder / 'malicious.pth.tar')
        six = timm.create_model('mobileformer_26m', num_classes=6)
        torch.save({'epoch': 9, 'arch': 'mobileformer_26m', 'state_dict': six.state_dict(),
                    'state_dict_ema': six.state_dict(), 'args': argparse.Namespace(model='mobileformer_26m'),
                    'metric': np.float64(50.0)}, folder / 'six.pth.tar')
    (folder / 'six.txt').write_text('\n'.join(['circle', 'ring', 'triangle', 'square', 'star', 'cross']) + '\n')
    (folder / 'five.txt').write_text('\n'.join(['a', 'b', 'c', 'd', 'e']) + '\n')
    # timm's train.py scripts, as a local stand-in for timm's repository (file:// URL)
    stand_in = folder / 'timm-repo'
    for name in ('train.py', 'validate.py', 'benchmark.py', 'inference.py'):
        (stand_in / f'v{timm.__version__}').mkdir(parents=True, exist_ok=True)
        (stand_in / f'v{timm.__version__}' / name).write_text(f'print("{name}")\n')
    (stand_in / 'vbroken').mkdir()
    for name in ('train.py', 'validate.py', 'benchmark.py', 'inference.py'):
        (stand_in / 'vbroken' / name).write_text('<html>this is not python\n')
    paths.update({p.name.split('.')[0]: p for p in folder.glob('*.pth.tar')})
    paths.update(six_names=folder / 'six.txt', five_names=folder / 'five.txt', marker=marker, repo=stand_in,
                 folder=folder)
    return paths


def snapshot(*roots: Path) -> Dict[str, str]:
    """Every file and folder under the roots (hidden ones too): path → sha256 of its bytes, or 'dir'."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob('*')):
            if path.is_symlink():
                found[str(path)] = 'link ' + os.readlink(path)
            else:
                found[str(path)] = 'dir' if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# ---------------------------------------------------------------------------------------------------------------
# The cases: (id, argv built from (inputs, work folder), exit code, text the error line must hold).
# Code 2 is a usage error (argparse), 1 any other expected failure.

Case = Callable[[Dict[str, Path], Path], List[str]]


def c(id_: str, argv: Case, code: int, expected: str, setup: Optional[Callable[[Dict[str, Path], Path], None]] = None,
      marks=()):
    return pytest.param(argv, code, expected, setup, id=id_, marks=marks)


def existing_folder(i, w):
    (w / 'out').mkdir()
    (w / 'out' / 'keep.txt').write_text('mine')


def existing_png(i, w):
    Image.new('RGB', (4, 4)).save(w / 'grid.png')


def existing_file(name):
    def setup(i, w):
        (w / name).write_text('mine')
    return setup


def dangling(name):
    def setup(i, w):
        (w / name).symlink_to(w / 'nowhere' / 'target')
    return setup


UNWRITABLE = '/proc/timm-mobileformer-test/out'

CASES = [
    # convert
    c('convert-missing', lambda i, w: ['convert', str(w / 'nope.pth.tar'), '--out', str(w / 'out')], 1, 'no such file'),
    c('convert-empty', lambda i, w: ['convert', str(i['empty']), '--out', str(w / 'out')], 1, 'empty'),
    c('convert-truncated', lambda i, w: ['convert', str(i['truncated']), '--out', str(w / 'out')], 1,
      'truncated or corrupt'),
    c('convert-random-bytes', lambda i, w: ['convert', str(i['random']), '--out', str(w / 'out')], 1,
      'truncated or corrupt'),
    c('convert-malicious', lambda i, w: ['convert', str(i['malicious']), '--out', str(w / 'out')], 1,
      'refused: unpickling it would call posix.system'),
    c('convert-nan', lambda i, w: ['convert', str(i['nan']), '--out', str(w / 'out')], 1, 'NaN or inf'),
    c('convert-inf', lambda i, w: ['convert', str(i['inf']), '--out', str(w / 'out')], 1, 'NaN or inf'),
    c('convert-wrong-variant', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--model', '52m'],
      1, 'mobileformer_52m'),
    c('convert-unknown-model', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--model', '27m'],
      2, "unknown model '27m'"),
    c('convert-fine-tuned', lambda i, w: ['convert', str(i['six']), '--out', str(w / 'out')], 1, '6 classes'),
    c('convert-existing-out', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out')], 1, '--overwrite',
      existing_folder),
    c('convert-out-is-file', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'f')], 1, 'existing file',
      existing_file('f')),
    c('convert-out-is-input', lambda i, w: ['convert', str(i['mf26']), '--out', str(i['mf26'])], 1,
      'destroy the input'),
    c('convert-out-holds-input', lambda i, w: ['convert', str(i['mf26']), '--out', str(i['folder']), '--overwrite'],
      1, 'destroy the input'),
    c('convert-unwritable', lambda i, w: ['convert', str(i['mf26']), '--out', UNWRITABLE], 1, 'cannot write in'),
    c('convert-dangling-symlink', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'link')], 1,
      'symbolic link to nothing', dangling('link')),
    c('convert-parent-is-file', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'f' / 'out')], 1,
      'is not a folder', existing_file('f')),
    c('convert-bad-repo-id', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--push-to-hub',
                                           'not a//repo'], 1, 'not a Hub repo id'),
    c('convert-no-out', lambda i, w: ['convert', str(i['mf26'])], 2, '--out'),
    # predict
    c('predict-missing-image', lambda i, w: ['predict', str(w / 'nope.png'), '--random-init'], 1, 'no such file'),
    c('predict-broken-image', lambda i, w: ['predict', str(i['broken']), '--random-init'], 1, 'cannot read the image'),
    c('predict-text-as-image', lambda i, w: ['predict', str(i['text']), '--random-init'], 1, 'cannot read the image'),
    c('predict-folder-as-image', lambda i, w: ['predict', str(w), '--random-init'], 1, 'is a folder'),
    c('predict-unknown-model', lambda i, w: ['predict', str(i['png']), '--model', 'mobileformer_1g'], 2,
      "unknown model 'mobileformer_1g'"),
    c('predict-unknown-tag', lambda i, w: ['predict', str(i['png']), '--model', '26m.in22k'], 2, "unknown tag 'in22k'"),
    c('predict-image-as-checkpoint', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['png'])], 1,
      'truncated or corrupt'),
    c('predict-malicious', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['malicious'])], 1,
      'refused'),
    c('predict-nan', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['nan'])], 1, 'NaN or inf'),
    c('predict-top-k-0', lambda i, w: ['predict', str(i['png']), '--random-init', '--top-k', '0'], 2, 'at least 1'),
    c('predict-top-k-text', lambda i, w: ['predict', str(i['png']), '--random-init', '--top-k', 'five'], 2,
      "'five' is not a whole number"),
    c('predict-class-names-count', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['six']),
                                                 '--class-names', str(i['five_names'])], 1, '5 class names'),
    c('predict-class-names-missing', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['six']),
                                                   '--class-names', str(w / 'nope.txt')], 1,
      'cannot read the class names'),
    c('predict-checkpoint-and-random', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['mf26']),
                                                     '--random-init'], 2, 'not allowed with'),
    c('predict-folder-without-weights', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(w)], 1,
      'without model.safetensors'),
    c('predict-threads-0', lambda i, w: ['predict', str(i['png']), '--random-init', '--threads', '0'], 2,
      'at least 1'),
    # attention
    c('attention-out-is-input-png', lambda i, w: ['attention', str(i['png']), '--random-init', '--out', str(i['png'])],
      1, 'destroy the input'),
    c('attention-out-is-input-jpg', lambda i, w: ['attention', str(i['jpg']), '--random-init', '--out', str(i['jpg'])],
      1, 'must end in .png'),
    c('attention-out-jpg', lambda i, w: ['attention', str(i['png']), '--random-init', '--out', str(w / 'g.jpg')], 1,
      'must end in .png'),
    c('attention-existing-out', lambda i, w: ['attention', str(i['png']), '--random-init', '--out',
                                              str(w / 'grid.png')], 1, '--overwrite', existing_png),
    c('attention-out-is-folder', lambda i, w: ['attention', str(i['png']), '--random-init', '--out', str(w / 'o.png')],
      1, 'existing folder', lambda i, w: (w / 'o.png').mkdir()),
    c('attention-unwritable', lambda i, w: ['attention', str(i['png']), '--random-init', '--out', UNWRITABLE + '.png'],
      1, 'cannot write in'),
    c('attention-broken-image', lambda i, w: ['attention', str(i['broken']), '--random-init', '--out',
                                              str(w / 'g.png')], 1, 'cannot read the image'),
    c('attention-missing-checkpoint', lambda i, w: ['attention', str(i['png']), '--checkpoint', str(w / 'x.pth'),
                                                    '--out', str(w / 'g.png')], 1, 'no such file'),
    c('attention-truncated-checkpoint', lambda i, w: ['attention', str(i['png']), '--checkpoint', str(i['truncated']),
                                                      '--out', str(w / 'g.png')], 1, 'truncated or corrupt'),
    c('attention-wrong-variant', lambda i, w: ['attention', str(i['png']), '--checkpoint', str(i['mf26']),
                                               '--model', '52m', '--out', str(w / 'new' / 'g.png')], 1,
      'mobileformer_52m'),
    c('attention-cell-size-0', lambda i, w: ['attention', str(i['png']), '--random-init', '--cell-size', '0', '--out',
                                             str(w / 'g.png')], 2, 'from 16 to 1024'),
    c('attention-bad-block', lambda i, w: ['attention', str(i['png']), '--random-init', '--model', '26m', '--blocks',
                                           '99', '--out', str(w / 'sub' / 'g.png')], 1, 'no bridge at blocks.99'),
    # export
    c('export-unknown-format', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.tflite')], 1,
      'must end in .onnx or .pt2'),
    c('export-no-model', lambda i, w: ['export', '--out', str(w / 'm.pt2')], 1, '--model is required'),
    c('export-existing-out', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.pt2')], 1, '--overwrite',
      existing_file('m.pt2')),
    c('export-out-is-input', lambda i, w: ['export', '--checkpoint', str(i['mf26']), '--out', str(i['mf26'])], 1,
      'must end in'),
    c('export-img-size-10', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.pt2'), '--img-size', '10'],
      2, 'from 64 to 4096'),
    c('export-opset-0', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'), '--opset', '0'], 2,
      'from 7 to 30'),
    c('export-checkpoint-and-pretrained', lambda i, w: ['export', '--model', '26m', '--checkpoint', str(i['mf26']),
                                                        '--pretrained', '--out', str(w / 'm.pt2')], 2,
      'not allowed with'),
    c('export-nan-checkpoint', lambda i, w: ['export', '--checkpoint', str(i['nan']), '--out', str(w / 'd' / 'm.pt2')],
      1, 'NaN or inf'),
    c('export-batch-size-alone', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'), '--batch-size',
                                               '2'], 1, 'add --save-optimized'),
    c('export-batch-size-0', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'), '--save-optimized',
                                           str(w / 'o.onnx'), '--batch-size', '0'], 2, 'from 1 to 1024'),
    c('export-existing-optimized', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'new.onnx'),
                                                 '--save-optimized', str(w / 'm.onnx')], 1, '--overwrite',
      existing_file('m.onnx')),
    c('export-optimized-is-out', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'),
                                               '--save-optimized', str(w / 'm.onnx')], 1, 'another file'),
    c('export-pretrained-offline', lambda i, w: ['export', '--model', '26m', '--pretrained', '--out',
                                                 str(w / 'm.pt2')], 1, 'pass --checkpoint FILE'),
    # bench
    c('bench-rounds-0', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--rounds', '0'], 2,
      'at least 1'),
    c('bench-batch-size-0', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--batch-sizes', '0'], 2,
      'at least 1'),
    c('bench-round-time-negative', lambda i, w: ['bench', '--out', str(w / 'b'), '--round-time', '-1'], 2,
      'above 0'),
    c('bench-round-time-nan', lambda i, w: ['bench', '--out', str(w / 'b'), '--round-time', 'nan'], 2, 'above 0'),
    c('bench-unknown-peer', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--peers', 'resnet999'],
      1, 'unknown timm model resnet999'),
    c('bench-peer-crashes', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--peers',
                                          'vit_tiny_patch16_224', '--img-size', '64'], 1, 'does not run on 64 px'),
    c('bench-existing-out', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'out')], 1, '--overwrite',
      existing_folder),
    c('bench-img-size-0', lambda i, w: ['bench', '--out', str(w / 'b'), '--img-size', '0'], 2, 'from 32 to 4096'),
    c('bench-threads-0', lambda i, w: ['bench', '--out', str(w / 'b'), '--threads', '0'], 2, 'at least 1'),
    c('bench-unknown-mode', lambda i, w: ['bench', '--out', str(w / 'b'), '--modes', 'turbo'], 2, 'invalid choice'),
    c('bench-train-batch-1', lambda i, w: ['bench', '--model', '26m', '--peers', '--out', str(w / 'b'), '--modes',
                                           'train', '--batch-sizes', '1', '--img-size', '32'], 1, 'nothing to time'),
    c('bench-no-out', lambda i, w: ['bench', '--model', '26m'], 2, '--out'),
    # demo-data
    c('demo-data-non-empty', lambda i, w: ['demo-data', str(w / 'out')], 1, '--overwrite', existing_folder),
    c('demo-data-into-file', lambda i, w: ['demo-data', str(w / 'f')], 1, 'existing file', existing_file('f')),
    c('demo-data-negative-train', lambda i, w: ['demo-data', str(w / 'd'), '--train-per-class', '-5'], 2,
      'at least 1'),
    c('demo-data-zero-val', lambda i, w: ['demo-data', str(w / 'd'), '--val-per-class', '0'], 2, 'at least 1'),
    c('demo-data-size-16', lambda i, w: ['demo-data', str(w / 'd'), '--img-size', '16'], 2, 'from 32 to 1024'),
    c('demo-data-old-size-spelling', lambda i, w: ['demo-data', str(w / 'd'), '--size', '8'], 2, 'from 32 to 1024'),
    c('demo-data-seed-negative', lambda i, w: ['demo-data', str(w / 'd'), '--seed', '-1'], 2, 'at least 0'),
    c('demo-data-count-text', lambda i, w: ['demo-data', str(w / 'd'), '--train-per-class', '1e3'], 2,
      "'1e3' is not a whole number"),
    c('demo-data-unwritable', lambda i, w: ['demo-data', UNWRITABLE], 1, 'cannot write in'),
    # info, run, fetch-scripts
    c('info-unknown-model', lambda i, w: ['info', '--model', '999m'], 2, "unknown model '999m'"),
    c('info-img-size-0', lambda i, w: ['info', '--img-size', '0'], 2, 'from 32 to 4096'),
    c('run-missing-script', lambda i, w: ['run', str(w / 'train.py')], 1, 'no such script'),
    c('fetch-scripts-offline', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', 'http://127.0.0.1:9'], 1,
      'download failed'),
    c('fetch-scripts-unknown-ref', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', i['repo'].as_uri(), '--ref',
                                                 'v0.0.0'], 1, 'not found'),
    c('fetch-scripts-not-python', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', i['repo'].as_uri(), '--ref',
                                                'vbroken'], 1, 'not a Python script'),
    c('fetch-scripts-existing', lambda i, w: ['fetch-scripts', str(w), '--url', i['repo'].as_uri()], 1, '--overwrite',
      existing_file('validate.py')),
    c('unknown-command', lambda i, w: ['frobnicate'], 2, 'invalid choice'),
]


@pytest.mark.parametrize('argv, code, expected, setup', CASES)
def test_bad_input_gets_one_line_and_leaves_nothing(argv, code, expected, setup, inputs, tmp_path, capsys,
                                                    monkeypatch, request):
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    if setup:
        setup(inputs, work)
    if 'offline' in request.node.callspec.id:
        go_offline(monkeypatch, tmp_path / 'empty_cache')
    before = snapshot(inputs['folder'], work)
    args = argv(inputs, work)
    got, out, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    prefix = f'{PROG}: error: ' if args[0] == 'frobnicate' else f'{PROG} {args[0]}: error: '
    assert 'Traceback' not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert expected in lines[0], lines[0]
    assert got == code, (got, err)
    assert 'weights_only=False' not in err
    assert snapshot(inputs['folder'], work) == before  # inputs untouched, nothing new, nothing half-written
    assert not Path(UNWRITABLE).parent.exists()
    assert not inputs['marker'].exists()


def test_help_of_every_command_lists_every_option_with_its_default():
    from timm_mobileformer.cli import COMMANDS, build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {m.COMMAND for m in COMMANDS}
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == 'help':
                continue
            assert action.help, (name, action.dest)
            assert action.option_strings[0] in text, (name, action.option_strings)
            assert '(default' in command.formatter_class(name)._get_help_string(action) or action.required, \
                (name, action.dest)


def test_variant_is_given_the_same_way_everywhere():
    from timm_mobileformer.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ('info', 'convert', 'predict', 'attention', 'export', 'bench'):
        options = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert '--model' in options and '--variant' not in options, name
    for name in ('predict', 'attention', 'export'):
        assert '--checkpoint' in {o for a in sub.choices[name]._actions for o in a.option_strings}
    for name in ('convert', 'attention', 'export', 'bench', 'demo-data', 'fetch-scripts'):
        assert '--overwrite' in {o for a in sub.choices[name]._actions for o in a.option_strings}
    assert COMMON_PROG == PROG


def test_debug_shows_the_traceback(inputs, tmp_path, capsys, monkeypatch):
    with pytest.raises(MobileFormerError, match='no such file'):
        main(['--debug', 'convert', str(tmp_path / 'nope.pth.tar'), '--out', str(tmp_path / 'out')])
    monkeypatch.setenv('TIMM_MOBILEFORMER_DEBUG', '1')
    with pytest.raises(MobileFormerError):
        main(['predict', str(tmp_path / 'nope.png'), '--random-init'])


# ---- what should work, works ------------------------------------------------------------------------------------

def test_predict_classifies_with_a_fine_tuned_train_py_checkpoint_and_class_names(inputs, capsys):
    code, out, err = run_cli(['predict', str(inputs['png']), '--checkpoint', str(inputs['six']), '--class-names',
                              str(inputs['six_names']), '--top-k', '10'], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(inputs['png']) and len(lines) == 7  # clamped to the 6 classes
    assert {line.split()[-1] for line in lines[1:]} == {'circle', 'ring', 'triangle', 'square', 'star', 'cross'}


@pytest.fixture(scope='module')
def converted26(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('converted') / 'mobileformer_26m'
    with one_torch_thread():
        assert main(['convert', str(inputs['mf26']), '--out', str(out)]) == 0
    return out


def test_predict_reads_a_converted_folder(inputs, converted26, capsys):
    code, out, err = run_cli(['predict', str(inputs['png']), '--checkpoint', str(converted26), '--top-k', '3'], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 4 and ' n0' in out.splitlines()[1]  # ImageNet synsets for 1000 classes


def test_convert_overwrite_replaces_the_folder_and_keeps_nothing_else(inputs, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'stale.txt').write_text('old')
    code, _, err = run_cli(['convert', str(inputs['mf26']), '--out', str(out), '--overwrite'], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert [p.name for p in tmp_path.iterdir()] == ['out']


def test_damaged_file_in_the_hub_cache_is_named(inputs, converted26, tmp_path, monkeypatch, capsys):
    from timm_mobileformer.hub import hub_id, install_in_hub_cache
    damaged = tmp_path / 'damaged'
    damaged.mkdir()
    for path in converted26.iterdir():
        data = path.read_bytes()
        (damaged / path.name).write_bytes(data[:1000] if path.name == 'model.safetensors' else data)
    snapshot_dir = install_in_hub_cache(damaged, hub_id('mobileformer_26m'), tmp_path / 'cache')
    go_offline(monkeypatch, tmp_path / 'cache')
    message = cli_error_line(['predict', str(inputs['png']), '--model', '26m'], capsys)
    assert str(snapshot_dir / 'model.safetensors') in message and 'truncated or corrupt' in message


def test_decompression_bomb_is_refused(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 64 * 48 // 4)  # the 64x48 test image is then 4x the limit
    before = snapshot(inputs['folder'])
    message = cli_error_line(['predict', str(inputs['png']), '--random-init'], capsys)
    assert 'decompression bomb' in message
    assert snapshot(inputs['folder']) == before


def test_attention_takes_the_variant_from_the_checkpoint(inputs, tmp_path, capsys):
    out = tmp_path / 'grid.png'
    code, stdout, err = run_cli(['attention', str(inputs['png']), '--checkpoint', str(inputs['mf26']), '--cell-size',
                                 '16', '--out', str(out)], capsys)
    assert code == 0, err
    assert 'mobileformer_26m: top-1' in stdout and [p.name for p in tmp_path.iterdir()] == ['grid.png']


def cli_error_line(argv: List[str], capsys) -> str:
    code, _, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith(f'{PROG} {argv[0]}: error: ')
    return lines[0]


def test_overwrite_replaces_an_existing_png_and_nothing_else(inputs, tmp_path, capsys):
    out = tmp_path / 'grid.png'
    out.write_bytes(b'old')
    code, _, err = run_cli(['attention', str(inputs['png']), '--random-init', '--model', '26m', '--cell-size', '16',
                            '--blocks', 'merge', '--out', str(out), '--overwrite'], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['grid.png']
    with Image.open(out) as grid:
        assert grid.format == 'PNG'


def test_fetch_scripts_from_a_local_stand_in(inputs, tmp_path, capsys):
    code, out, err = run_cli(['fetch-scripts', str(tmp_path / 'scripts'), '--url', inputs['repo'].as_uri()], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / 'scripts').iterdir()) == sorted(
        ['train.py', 'validate.py', 'benchmark.py', 'inference.py'])
    assert f'/v{timm.__version__}/train.py' in out


def test_fetch_scripts_over_http_on_localhost(inputs, tmp_path, capsys):
    import functools
    import http.server
    import threading
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(inputs['repo']))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}'
        code, _, err = run_cli(['fetch-scripts', str(tmp_path), '--url', url], capsys)
        assert code == 0, err
        assert (tmp_path / 'inference.py').read_text() == 'print("inference.py")\n'
        code, _, err = run_cli(['fetch-scripts', str(tmp_path / 'x'), '--url', url, '--ref', 'v0.0.0'], capsys)
        assert code == 1 and 'HTTP 404' in err and not (tmp_path / 'x').exists()
    finally:
        server.shutdown()
        server.server_close()


# ---- the model API ------------------------------------------------------------------------------------------------

def test_api_refuses_damaged_and_malicious_files_on_timms_own_path(inputs):
    for name, text in (('nan', 'NaN or inf'), ('malicious', 'refused')):
        with pytest.raises(MobileFormerError, match=text) as excinfo:
            timm.create_model('mobileformer_26m', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(inputs[name])))
        assert '\n' not in str(excinfo.value) and 'weights_only=False' not in str(excinfo.value)
    assert not inputs['marker'].exists()


def test_api_offline_is_one_clean_exception(tmp_path, monkeypatch):
    from timm_mobileformer.hub import WeightsUnreachableError
    go_offline(monkeypatch, tmp_path / 'cache')
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError) as excinfo:
        timm.create_model('mobileformer_26m', pretrained=True)
    assert time.monotonic() - start < 10
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert 'pretrained_cfg_overlay' in str(excinfo.value)


def test_api_unreachable_hub_fails_fast_without_offline_mode(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but no route to the Hub: one probe, no retries, the cache still consulted."""
    from huggingface_hub import constants as hf_constants
    from timm_mobileformer import hub
    from timm_mobileformer.hub import WeightsUnreachableError
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(hf_constants, 'ENDPOINT', 'http://127.0.0.1:9')
    monkeypatch.setattr(hub, '_hub_reachable', None)
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError, match='no connection to 127.0.0.1'):
        timm.create_model('mobileformer_26m', pretrained=True)
    assert time.monotonic() - start < 10
    assert hf_constants.HF_HUB_OFFLINE is False


@pytest.fixture(scope='module')
def small_model():
    torch.manual_seed(0)
    with one_torch_thread():
        return timm.create_model('mobileformer_26m')


def test_api_empty_batch(small_model):
    with pytest.raises(ValueError, match='empty batch|batch size 0'):
        small_model.eval()(torch.zeros(0, 3, 64, 64))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
def test_api_other_float_dtypes(small_model, dtype):
    with pytest.raises(TypeError, match='float32'):
        small_model.eval()(torch.zeros(1, 3, 64, 64, dtype=dtype))


def test_api_train_mode_batch_of_one(small_model):
    with pytest.raises(ValueError, match='batch of one|batch size 1'):
        small_model.train()(torch.zeros(1, 3, 64, 64))


# ---- signals: the real command, stopped mid-run --------------------------------------------------------------

def _staging(folder: Path) -> List[Path]:
    return [p for p in folder.iterdir() if STAGING_MARK in p.name]


SIGNAL_RUNS = {
    'convert': lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'new' / 'out')],
    'export': lambda i, w: ['export', '--model', '26m', '--out', str(w / 'new' / 'm.pt2'), '--img-size', '64'],
    'demo-data': lambda i, w: ['demo-data', str(w / 'new' / 'd'), '--train-per-class', '5000', '--img-size', '32'],
}


def _default_sigint() -> None:
    """The command as a user's shell starts it: a suite run in the background (a non-interactive `cmd &`)
    ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
@pytest.mark.parametrize('command', list(SIGNAL_RUNS))
def test_signal_mid_run_leaves_nothing(command, sig, inputs, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    before = snapshot(inputs['folder'])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen([sys.executable, '-m', 'timm_mobileformer', *SIGNAL_RUNS[command](inputs, work)],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not ((work / 'new').exists() and _staging(work / 'new')):
            assert proc.poll() is None, f'finished before it could be stopped: {proc.stderr.read()}'
            assert time.monotonic() < deadline, 'no staging name appeared'
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith(f'{PROG} {command}: error: ') and 'removed what was half-written' in lines[0], err
    assert list(work.iterdir()) == []  # neither the output, nor its staging name, nor the folder it created
    assert snapshot(inputs['folder']) == before


# ---- the staging helper itself ----------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['file', 'dir'])
@pytest.mark.parametrize('fault', [RuntimeError, KeyboardInterrupt])
def test_staged_failure_keeps_the_old_output_and_leaves_nothing(tmp_path, kind, fault):
    from timm_mobileformer.outputs import staged
    out = tmp_path / ('old.txt' if kind == 'file' else 'old')
    if kind == 'file':
        out.write_text('old')
    else:
        out.mkdir()
        (out / 'keep.txt').write_text('old')
    before = snapshot(tmp_path)
    with pytest.raises(fault):
        with staged(out, kind, overwrite=True) as tmp:
            (tmp / 'new.txt' if kind == 'dir' else tmp).write_text('half')
            raise fault()
    assert snapshot(tmp_path) == before
    with pytest.raises(fault):
        with staged(tmp_path / 'a' / 'b' / 'new.txt', 'file') as tmp:
            tmp.write_text('half')
            raise fault()
    assert snapshot(tmp_path) == before  # the parents it created are gone too


def test_staged_overwrite_replaces_a_folder_whole(tmp_path):
    from timm_mobileformer.outputs import staged
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'stale.txt').write_text('old')
    with staged(out, 'dir', overwrite=True) as tmp:
        (tmp / 'new.txt').write_text('new')
    assert [p.name for p in tmp_path.iterdir()] == ['out'] and [p.name for p in out.iterdir()] == ['new.txt']


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere; the /proc cases cover this as root')
def test_read_only_folder_is_refused_before_work(inputs, tmp_path, capsys):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        message = cli_error_line(['convert', str(inputs['mf26']), '--out', str(locked / 'out')], capsys)
        assert 'cannot write in' in message and list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
