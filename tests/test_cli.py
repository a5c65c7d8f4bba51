"""The command line against bad input: every command, as a demanding new user would try it.

Each case of the fault table asserts the exit code (2 for a usage error, 1 for any other expected failure),
exactly one line of error (`timm-mobileformer <command>: error: ...`) holding the expected text, no traceback,
the user's files byte-identical afterwards, and no new file or folder left (staging names included). The cases
run in-process through `cli.main`, offline with an empty Hugging Face cache.
"""
import argparse
from pathlib import Path
from typing import Callable, Optional

import pytest
from cli_util import PROG, error_line, folder_state
from PIL import Image

from timm_mobileformer.cli import COMMANDS, build_parser, main
from timm_mobileformer.commands._common import PROG as COMMON_PROG
from timm_mobileformer.errors import MobileFormerError

pytestmark = pytest.mark.usefixtures('single_thread')

UserFiles = dict[str, Path]
Argv = Callable[[UserFiles, Path], list[str]]  # (the user's files i, the work folder w) → the command line
Setup = Callable[[UserFiles, Path], None]  # prepares the work folder before the command runs

UNWRITABLE = '/proc/timm-mobileformer-test/out'


def fault(id_: str, argv: Argv, code: int, expected: str, setup: Optional[Setup] = None):
    """One case of the fault table: the command line, its exit code, text its error line must hold, and what to
    put in the work folder first."""
    return pytest.param(argv, code, expected, setup, id=id_)


def non_empty_out_folder(i: UserFiles, w: Path) -> None:
    (w / 'out').mkdir()
    (w / 'out' / 'keep.txt').write_text('mine')


def existing_png(i: UserFiles, w: Path) -> None:
    Image.new('RGB', (4, 4)).save(w / 'grid.png')


def existing_file(name: str) -> Setup:
    def setup(i: UserFiles, w: Path) -> None:
        (w / name).write_text('mine')
    return setup


def dangling_symlink(name: str) -> Setup:
    def setup(i: UserFiles, w: Path) -> None:
        (w / name).symlink_to(w / 'nowhere' / 'target')
    return setup


def existing_folder(name: str) -> Setup:
    def setup(i: UserFiles, w: Path) -> None:
        (w / name).mkdir()
    return setup


CASES = [  # (id, command line, exit code, text the error line holds, setup)
    # convert
    fault('convert-missing', lambda i, w: ['convert', str(w / 'nope.pth.tar'), '--out', str(w / 'out')], 1,
          'no such file'),
    fault('convert-empty', lambda i, w: ['convert', str(i['empty']), '--out', str(w / 'out')], 1, 'empty'),
    fault('convert-truncated', lambda i, w: ['convert', str(i['truncated']), '--out', str(w / 'out')], 1,
          'truncated or corrupt'),
    fault('convert-random-bytes', lambda i, w: ['convert', str(i['random']), '--out', str(w / 'out')], 1,
          'truncated or corrupt'),
    fault('convert-malicious', lambda i, w: ['convert', str(i['malicious']), '--out', str(w / 'out')], 1,
          'refused: unpickling it would call posix.system'),
    fault('convert-nan', lambda i, w: ['convert', str(i['nan']), '--out', str(w / 'out')], 1, 'NaN or inf'),
    fault('convert-inf', lambda i, w: ['convert', str(i['inf']), '--out', str(w / 'out')], 1, 'NaN or inf'),
    fault('convert-wrong-variant', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--model', '52m'],
          1, 'mobileformer_52m'),
    fault('convert-unknown-model', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--model', '27m'],
          2, "unknown model '27m'"),
    fault('convert-fine-tuned', lambda i, w: ['convert', str(i['six']), '--out', str(w / 'out')], 1, '6 classes'),
    fault('convert-existing-out', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out')], 1, '--overwrite',
          non_empty_out_folder),
    fault('convert-out-is-file', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'f')], 1, 'existing file',
          existing_file('f')),
    fault('convert-out-is-input', lambda i, w: ['convert', str(i['mf26']), '--out', str(i['mf26'])], 1,
          'destroy the input'),
    fault('convert-out-holds-input', lambda i, w: ['convert', str(i['mf26']), '--out', str(i['folder']), '--overwrite'],
          1, 'destroy the input'),
    fault('convert-unwritable', lambda i, w: ['convert', str(i['mf26']), '--out', UNWRITABLE], 1, 'cannot write in'),
    fault('convert-dangling-symlink', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'link')], 1,
          'symbolic link to nothing', dangling_symlink('link')),
    fault('convert-parent-is-file', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'f' / 'out')], 1,
          'is not a folder', existing_file('f')),
    fault('convert-bad-repo-id', lambda i, w: ['convert', str(i['mf26']), '--out', str(w / 'out'), '--push-to-hub',
                                               'not a//repo'], 1, 'not a Hub repo id'),
    fault('convert-no-out', lambda i, w: ['convert', str(i['mf26'])], 2, '--out'),
    # predict
    fault('predict-missing-image', lambda i, w: ['predict', str(w / 'nope.png'), '--random-init'], 1, 'no such file'),
    fault('predict-broken-image', lambda i, w: ['predict', str(i['broken']), '--random-init'], 1,
          'cannot read the image'),
    fault('predict-text-as-image', lambda i, w: ['predict', str(i['text']), '--random-init'], 1,
          'cannot read the image'),
    fault('predict-folder-as-image', lambda i, w: ['predict', str(w), '--random-init'], 1, 'is a folder'),
    fault('predict-unknown-model', lambda i, w: ['predict', str(i['png']), '--model', 'mobileformer_1g'], 2,
          "unknown model 'mobileformer_1g'"),
    fault('predict-unknown-tag', lambda i, w: ['predict', str(i['png']), '--model', '26m.in22k'], 2,
          "unknown tag 'in22k'"),
    fault('predict-image-as-checkpoint', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['png'])], 1,
          'truncated or corrupt'),
    fault('predict-malicious', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['malicious'])], 1,
          'refused'),
    fault('predict-nan', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['nan'])], 1, 'NaN or inf'),
    fault('predict-top-k-0', lambda i, w: ['predict', str(i['png']), '--random-init', '--top-k', '0'], 2, 'at least 1'),
    fault('predict-top-k-text', lambda i, w: ['predict', str(i['png']), '--random-init', '--top-k', 'five'], 2,
          "'five' is not a whole number"),
    fault('predict-class-names-count', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['six']),
                                                     '--class-names', str(i['five_names'])], 1, '5 class names'),
    fault('predict-class-names-missing', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['six']),
                                                       '--class-names', str(w / 'nope.txt')], 1,
          'cannot read the class names'),
    fault('predict-checkpoint-and-random', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(i['mf26']),
                                                         '--random-init'], 2, 'not allowed with'),
    fault('predict-folder-without-weights', lambda i, w: ['predict', str(i['png']), '--checkpoint', str(w)], 1,
          'without model.safetensors'),
    fault('predict-threads-0', lambda i, w: ['predict', str(i['png']), '--random-init', '--threads', '0'], 2,
          'at least 1'),
    # attention
    fault('attention-out-is-input-png', lambda i, w: ['attention', str(i['png']), '--random-init', '--out',
                                                      str(i['png'])], 1, 'destroy the input'),
    fault('attention-out-is-input-jpg', lambda i, w: ['attention', str(i['jpg']), '--random-init', '--out',
                                                      str(i['jpg'])], 1, 'must end in .png'),
    fault('attention-out-jpg', lambda i, w: ['attention', str(i['png']), '--random-init', '--out', str(w / 'g.jpg')], 1,
          'must end in .png'),
    fault('attention-existing-out', lambda i, w: ['attention', str(i['png']), '--random-init', '--out',
                                                  str(w / 'grid.png')], 1, '--overwrite', existing_png),
    fault('attention-out-is-folder', lambda i, w: ['attention', str(i['png']), '--random-init', '--out',
                                                   str(w / 'o.png')], 1, 'existing folder',
          existing_folder('o.png')),
    fault('attention-unwritable', lambda i, w: ['attention', str(i['png']), '--random-init', '--out',
                                                UNWRITABLE + '.png'], 1, 'cannot write in'),
    fault('attention-broken-image', lambda i, w: ['attention', str(i['broken']), '--random-init', '--out',
                                                  str(w / 'g.png')], 1, 'cannot read the image'),
    fault('attention-missing-checkpoint', lambda i, w: ['attention', str(i['png']), '--checkpoint', str(w / 'x.pth'),
                                                        '--out', str(w / 'g.png')], 1, 'no such file'),
    fault('attention-truncated-checkpoint', lambda i, w: ['attention', str(i['png']), '--checkpoint',
                                                          str(i['truncated']), '--out', str(w / 'g.png')], 1,
          'truncated or corrupt'),
    fault('attention-wrong-variant', lambda i, w: ['attention', str(i['png']), '--checkpoint', str(i['mf26']),
                                                   '--model', '52m', '--out', str(w / 'new' / 'g.png')], 1,
          'mobileformer_52m'),
    fault('attention-cell-size-0', lambda i, w: ['attention', str(i['png']), '--random-init', '--cell-size', '0',
          '--out',
                                                 str(w / 'g.png')], 2, 'from 16 to 1024'),
    fault('attention-bad-block', lambda i, w: ['attention', str(i['png']), '--random-init', '--model', '26m',
          '--blocks',
                                               '99', '--out', str(w / 'sub' / 'g.png')], 1, 'no bridge at blocks.99'),
    # export
    fault('export-unknown-format', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.tflite')], 1,
          'must end in .onnx or .pt2'),
    fault('export-no-model', lambda i, w: ['export', '--out', str(w / 'm.pt2')], 1, '--model is required'),
    fault('export-existing-out', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.pt2')], 1, '--overwrite',
          existing_file('m.pt2')),
    fault('export-out-is-input', lambda i, w: ['export', '--checkpoint', str(i['mf26']), '--out', str(i['mf26'])], 1,
          'must end in'),
    fault('export-img-size-10', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.pt2'), '--img-size',
          '10'],
          2, 'from 64 to 4096'),
    fault('export-opset-0', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'), '--opset', '0'], 2,
          'from 7 to 30'),
    fault('export-checkpoint-and-pretrained', lambda i, w: ['export', '--model', '26m', '--checkpoint', str(i['mf26']),
                                                            '--pretrained', '--out', str(w / 'm.pt2')], 2,
          'not allowed with'),
    fault('export-nan-checkpoint', lambda i, w: ['export', '--checkpoint', str(i['nan']), '--out',
                                                 str(w / 'd' / 'm.pt2')], 1, 'NaN or inf'),
    fault('export-batch-size-alone', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'),
          '--batch-size',
                                                   '2'], 1, 'add --save-optimized'),
    fault('export-batch-size-0', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'),
          '--save-optimized',
                                               str(w / 'o.onnx'), '--batch-size', '0'], 2, 'from 1 to 1024'),
    fault('export-existing-optimized', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'new.onnx'),
                                                     '--save-optimized', str(w / 'm.onnx')], 1, '--overwrite',
          existing_file('m.onnx')),
    fault('export-optimized-is-out', lambda i, w: ['export', '--model', '26m', '--out', str(w / 'm.onnx'),
                                                   '--save-optimized', str(w / 'm.onnx')], 1, 'another file'),
    fault('export-pretrained-offline', lambda i, w: ['export', '--model', '26m', '--pretrained', '--out',
                                                     str(w / 'm.pt2')], 1, 'pass --checkpoint FILE'),
    # bench
    fault('bench-rounds-0', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--rounds', '0'], 2,
          'at least 1'),
    fault('bench-batch-size-0', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--batch-sizes',
          '0'], 2,
          'at least 1'),
    fault('bench-round-time-negative', lambda i, w: ['bench', '--out', str(w / 'b'), '--round-time', '-1'], 2,
          'above 0'),
    fault('bench-round-time-nan', lambda i, w: ['bench', '--out', str(w / 'b'), '--round-time', 'nan'], 2, 'above 0'),
    fault('bench-unknown-peer', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--peers', 'resnet999'],
          1, 'unknown timm model resnet999'),
    fault('bench-peer-crashes', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'b'), '--peers',
                                              'vit_tiny_patch16_224', '--img-size', '64'], 1, 'does not run on 64 px'),
    fault('bench-existing-out', lambda i, w: ['bench', '--model', '26m', '--out', str(w / 'out')], 1, '--overwrite',
          non_empty_out_folder),
    fault('bench-img-size-0', lambda i, w: ['bench', '--out', str(w / 'b'), '--img-size', '0'], 2, 'from 32 to 4096'),
    fault('bench-threads-0', lambda i, w: ['bench', '--out', str(w / 'b'), '--threads', '0'], 2, 'at least 1'),
    fault('bench-unknown-mode', lambda i, w: ['bench', '--out', str(w / 'b'), '--modes', 'turbo'], 2, 'invalid choice'),
    fault('bench-train-batch-1', lambda i, w: ['bench', '--model', '26m', '--peers', '--out', str(w / 'b'), '--modes',
                                               'train', '--batch-sizes', '1', '--img-size', '32'], 1,
          'nothing to time'),
    fault('bench-no-out', lambda i, w: ['bench', '--model', '26m'], 2, '--out'),
    # demo-data
    fault('demo-data-non-empty', lambda i, w: ['demo-data', str(w / 'out')], 1, '--overwrite', non_empty_out_folder),
    fault('demo-data-into-file', lambda i, w: ['demo-data', str(w / 'f')], 1, 'existing file', existing_file('f')),
    fault('demo-data-negative-train', lambda i, w: ['demo-data', str(w / 'd'), '--train-per-class', '-5'], 2,
          'at least 1'),
    fault('demo-data-zero-val', lambda i, w: ['demo-data', str(w / 'd'), '--val-per-class', '0'], 2, 'at least 1'),
    fault('demo-data-size-16', lambda i, w: ['demo-data', str(w / 'd'), '--img-size', '16'], 2, 'from 32 to 1024'),
    fault('demo-data-old-size-spelling', lambda i, w: ['demo-data', str(w / 'd'), '--size', '8'], 2, 'from 32 to 1024'),
    fault('demo-data-seed-negative', lambda i, w: ['demo-data', str(w / 'd'), '--seed', '-1'], 2, 'at least 0'),
    fault('demo-data-count-text', lambda i, w: ['demo-data', str(w / 'd'), '--train-per-class', '1e3'], 2,
          "'1e3' is not a whole number"),
    fault('demo-data-unwritable', lambda i, w: ['demo-data', UNWRITABLE], 1, 'cannot write in'),
    # info, run, fetch-scripts
    fault('info-unknown-model', lambda i, w: ['info', '--model', '999m'], 2, "unknown model '999m'"),
    fault('info-img-size-0', lambda i, w: ['info', '--img-size', '0'], 2, 'from 32 to 4096'),
    fault('run-missing-script', lambda i, w: ['run', str(w / 'train.py')], 1, 'no such script'),
    fault('fetch-scripts-offline', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', 'http://127.0.0.1:9'], 1,
          'download failed'),
    fault('fetch-scripts-unknown-ref', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', i['repo'].as_uri(),
                                                     '--ref', 'v0.0.0'], 1, 'not found'),
    fault('fetch-scripts-not-python', lambda i, w: ['fetch-scripts', str(w / 's'), '--url', i['repo'].as_uri(), '--ref',
                                                    'vbroken'], 1, 'not a Python script'),
    fault('fetch-scripts-existing', lambda i, w: ['fetch-scripts', str(w), '--url', i['repo'].as_uri()], 1,
          '--overwrite', existing_file('validate.py')),
    fault('unknown-command', lambda i, w: ['frobnicate'], 2, 'invalid choice'),
]


@pytest.mark.parametrize('argv, code, expected, setup', CASES)
def test_bad_input_gets_one_line_and_leaves_nothing(argv, code, expected, setup, user_files, empty_offline_hub,
                                                    tmp_path, monkeypatch):
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    if setup:
        setup(user_files, work)
    before = folder_state(user_files['folder'], work)
    assert expected in error_line(argv(user_files, work), code, allow_warnings=False)
    assert folder_state(user_files['folder'], work) == before  # inputs untouched, nothing new, nothing half-written
    assert not Path(UNWRITABLE).parent.exists()
    assert not user_files['marker'].exists()


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """command name → its argparse parser."""
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def options_of(command: str) -> set:
    return {option for action in subcommand_parsers()[command]._actions for option in action.option_strings}


def test_help_of_every_command_lists_every_option_with_its_default():
    parsers = subcommand_parsers()
    assert set(parsers) == {m.COMMAND for m in COMMANDS}
    for name, command in parsers.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == 'help':
                continue
            assert action.help, (name, action.dest)
            assert action.option_strings[0] in text, (name, action.option_strings)
            assert '(default' in command.formatter_class(name)._get_help_string(action) or action.required, \
                (name, action.dest)


def test_variant_checkpoint_and_overwrite_are_spelled_the_same_everywhere():
    for name in ('info', 'convert', 'predict', 'attention', 'export', 'bench'):
        assert '--model' in options_of(name) and '--variant' not in options_of(name), name
    for name in ('predict', 'attention', 'export'):
        assert '--checkpoint' in options_of(name), name
    for name in ('convert', 'attention', 'export', 'bench', 'demo-data', 'fetch-scripts'):
        assert '--overwrite' in options_of(name), name
    assert COMMON_PROG == PROG


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(MobileFormerError, match='no such file'):
        main(['--debug', 'convert', str(tmp_path / 'nope.pth.tar'), '--out', str(tmp_path / 'out')])


def test_debug_environment_variable_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_MOBILEFORMER_DEBUG', '1')
    with pytest.raises(MobileFormerError):
        main(['predict', str(tmp_path / 'nope.png'), '--random-init'])


def test_decompression_bomb_is_refused(user_files, monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 64 * 48 // 4)  # the 64x48 test image is then 4x the limit
    before = folder_state(user_files['folder'])
    assert 'decompression bomb' in error_line(['predict', str(user_files['png']), '--random-init'])
    assert folder_state(user_files['folder']) == before
