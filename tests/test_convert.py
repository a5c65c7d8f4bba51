"""`timm-mobileformer convert`: the authors' file → a Hub-ready folder, and every bad input's one-line error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from cli_util import error_line
from safetensors.torch import load_file
from timm.models import save_for_hf

from timm_mobileformer.cli import main
from timm_mobileformer.convert import convert
from timm_mobileformer.errors import CheckpointError
from timm_mobileformer.mobileformer import checkpoint_filter_fn, model_cfgs

pytestmark = pytest.mark.usefixtures('single_thread')

VARIANTS = tuple(model_cfgs)


@pytest.mark.parametrize('variant', VARIANTS)
def test_round_trip_keeps_every_tensor(converted, authors_files, variant):
    folder = converted[variant]
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    authors = torch.load(authors_files[variant], weights_only=True)['state_dict']
    authors = {k: v for k, v in authors.items() if not k.endswith('num_batches_tracked')}
    model = timm.create_model(f'local-dir:{folder}', pretrained=True)
    expected = checkpoint_filter_fn(authors, model)  # the authors' tensors under timm names
    saved = load_file(folder / 'model.safetensors')
    loaded = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert len(expected) == len(authors) and set(expected) == set(loaded)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
        assert torch.equal(saved[key], value), key


def run_cli(args: list[str], code: int = 1) -> str:
    """Run the CLI in-process; return the one-line error it prints (checked: one line, no traceback, exit code;
    2 for a usage error)."""
    return error_line(args, code)


@pytest.mark.parametrize('variant_args', [[], ['--model', '52m']])
def test_cli_writes_a_hub_ready_folder_and_shows_progress(authors_files, tmp_path, capsys, variant_args):
    out = tmp_path / 'out'
    assert main(['convert', str(authors_files['mobileformer_52m']), '--out', str(out), *variant_args]) == 0
    progress = capsys.readouterr().out
    for step in ('reading', 'variant: mobileformer_52m', 'writing model.safetensors', 'checked:', f'wrote {out}'):
        assert step in progress
    assert [p.name for p in tmp_path.iterdir()] == ['out']  # no staging folder left
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'mobileformer_52m' and config['num_classes'] == 1000
    assert config['pretrained_cfg']['hf_hub_filename'] == 'model.safetensors'
    assert config['pretrained_cfg']['license'] == 'unknown'
    card = (out / 'README.md').read_text()
    header = card.split('---')[1]
    for line in ('library_name: timm', 'license: unknown', '- imagenet-1k', '- image-classification'):
        assert line in header
    for text in ('# Model card for mobileformer_52m.in1k', '(paper: 3.5)', '(paper: 52)', '68.7%',
                 '### Image Classification', '### Feature Map Extraction', '### Image Embeddings',
                 '## Citation', '@inproceedings', '## License', 'without a license', 'mobile-former-52m.pth.tar'):
        assert text in card, text


def test_config_json_has_the_form_save_for_hf_writes(converted, tmp_path):
    save_for_hf(timm.create_model('mobileformer_52m'), tmp_path, safe_serialization=True)
    reference = json.loads((tmp_path / 'config.json').read_text())
    ours = json.loads((converted['mobileformer_52m'] / 'config.json').read_text())
    assert set(ours) == set(reference)
    assert set(ours['pretrained_cfg']) == set(reference['pretrained_cfg']) | {'hf_hub_filename'}


class RunsCode:
    """Pickles to a call of print: what a malicious checkpoint would do with os.system."""

    def __reduce__(self):
        return print, ('this pickle ran code',)


def corrupt_inputs(source: Path, folder: Path) -> dict:
    """name → (path, extra CLI args, text the one-line error must contain)."""
    data = source.read_bytes()
    (folder / 'truncated.pth.tar').write_bytes(data[:len(data) // 2])
    (folder / 'garbage.pth.tar').write_bytes(b'not a checkpoint at all' * 16)
    state_dict = torch.load(source, weights_only=True)['state_dict']
    torch.save({'state_dict': state_dict, 'hook': RunsCode()}, folder / 'unsafe.pth.tar')
    torch.save({'state_dict': {'conv.weight': torch.zeros(4, 3, 3, 3)}}, folder / 'other_net.pth.tar')
    return {
        'truncated': (folder / 'truncated.pth.tar', [], 'truncated or corrupt; get a fresh copy'),
        'garbage': (folder / 'garbage.pth.tar', [], 'truncated or corrupt; get a fresh copy'),
        'unsafe pickle': (folder / 'unsafe.pth.tar', [], 'refused: unpickling it would call builtins.print'),
        'missing': (folder / 'missing.pth.tar', [], 'no such file'),
        'not mobile-former': (folder / 'other_net.pth.tar', [], 'fit no Mobile-Former variant'),
        'wrong variant': (source, ['--model', '294m'], 'mobileformer_294m'),
        'unknown variant': (source, ['--model', 'mobileformer_999m'], "unknown model 'mobileformer_999m': choose"),
        'bad repo id': (source, ['--push-to-hub', 'not a//repo'], 'is not a Hub repo id'),
    }


@pytest.mark.parametrize('case', ['truncated', 'garbage', 'unsafe pickle', 'missing', 'not mobile-former',
                                  'wrong variant', 'unknown variant', 'bad repo id'])
def test_bad_input_gets_a_one_line_error_and_no_folder(authors_files, tmp_path, capsys, case):
    path, args, expected = corrupt_inputs(authors_files['mobileformer_52m'], tmp_path)[case]
    out = tmp_path / 'out'
    message = run_cli(['convert', str(path), '--out', str(out), *args], code=2 if case == 'unknown variant' else 1)
    assert expected in message
    assert not out.exists() and not list(tmp_path.glob('.out*'))
    assert 'this pickle ran code' not in capsys.readouterr().out


def test_unsafe_pickle_message_names_what_it_needs(authors_files, tmp_path):
    path = corrupt_inputs(authors_files['mobileformer_52m'], tmp_path)['unsafe pickle'][0]
    message = run_cli(['convert', str(path), '--out', str(tmp_path / 'out')])
    assert 'would call builtins.print' in message and 'not loaded' in message
    assert 'weights_only=False' not in message


def test_wrong_variant_message_names_both_variants(authors_files, tmp_path):
    message = run_cli(['convert', str(authors_files['mobileformer_52m']), '--out', str(tmp_path / 'o'),
                       '--model', '294m'])
    assert 'mobileformer_294m' in message and 'mobileformer_52m' in message


def test_existing_folder_is_not_overwritten(authors_files, tmp_path):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    message = run_cli(['convert', str(authors_files['mobileformer_26m']), '--out', str(tmp_path / 'out')])
    assert 'the folder is not empty' in message and '--overwrite' in message
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['keep.txt']


def test_overwrite_replaces_the_folder_and_keeps_nothing_else(authors_files, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'stale.txt').write_text('old')
    assert main(['convert', str(authors_files['mobileformer_26m']), '--out', str(out), '--overwrite']) == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert [p.name for p in tmp_path.iterdir()] == ['out']


def test_checkpoint_that_fails_the_logit_check_leaves_nothing(authors_files, tmp_path):
    state_dict = torch.load(authors_files['mobileformer_26m'], weights_only=True)['state_dict']
    key = next(k for k in state_dict if k.endswith('running_var'))
    state_dict[key] = torch.full_like(state_dict[key], float('nan'))
    torch.save({'state_dict': state_dict}, tmp_path / 'damaged.pth.tar')
    with pytest.raises(CheckpointError, match=f'NaN or inf values \\(first in {key}'):
        convert(tmp_path / 'damaged.pth.tar', tmp_path / 'out')
    assert [p.name for p in tmp_path.iterdir()] == ['damaged.pth.tar']


def test_cli_error_has_no_traceback(authors_files, tmp_path):
    """What a user sees from the real command: one line on stderr, exit status 1."""
    path = corrupt_inputs(authors_files['mobileformer_52m'], tmp_path)['truncated'][0]
    result = subprocess.run([sys.executable, '-m', 'timm_mobileformer', 'convert', str(path), '--out',
                             str(tmp_path / 'out')], capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 1
    assert result.stderr.startswith('timm-mobileformer convert: error: '), result.stderr
    assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr, result.stderr


class FakeHfApi:
    """Records what would be uploaded, and checks the folder is complete when it is."""
    calls: list = []

    def create_repo(self, repo_id, exist_ok=False):
        self.calls.append(('create_repo', repo_id, exist_ok))

    def upload_folder(self, repo_id, folder_path, commit_message):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(('upload_folder', repo_id, files))
        return type('Commit', (), {'commit_url': f'https://huggingface.co/{repo_id}/commit/0'})()


def test_push_to_hub_uploads_the_finished_folder(authors_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('timm_mobileformer.convert.HfApi', FakeHfApi)
    monkeypatch.setattr(FakeHfApi, 'calls', [])
    repo = 'someone/mobileformer_26m.in1k'
    assert main(['convert', str(authors_files['mobileformer_26m']), '--out', str(tmp_path / 'out'),
                 '--push-to-hub', repo]) == 0
    assert FakeHfApi.calls == [('create_repo', repo, True),
                               ('upload_folder', repo, ['README.md', 'config.json', 'model.safetensors'])]
    assert f"hf-hub:{repo}" in (tmp_path / 'out' / 'README.md').read_text()
    assert 'uploaded: https://huggingface.co/' in capsys.readouterr().out


def test_failed_push_keeps_the_folder_and_says_how_to_retry(authors_files, tmp_path, empty_offline_hub):
    out = tmp_path / 'out'
    message = run_cli(['convert', str(authors_files['mobileformer_26m']), '--out', str(out),
                       '--push-to-hub', 'someone/mobileformer_26m.in1k'])
    assert 'upload to someone/mobileformer_26m.in1k failed' in message
    assert f'hf upload someone/mobileformer_26m.in1k {out}' in message
    assert (out / 'model.safetensors').exists()
