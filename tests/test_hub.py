"""Pretrained weights through the (emulated, offline) Hugging Face Hub: every way timm users ask for them, and
what they see when the weights are out of reach."""
import time
from pathlib import Path

import httpx2
import pytest
import timm
import torch
from cli_util import error_line
from conftest_hub import go_offline
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import RepositoryNotFoundError
from official import golden_inputs, official_state_dict

import timm_mobileformer.hub
from timm_mobileformer.hub import HUB_ORG, WeightsUnreachableError, authors_filename, hub_id, install_in_hub_cache
from timm_mobileformer.mobileformer import model_cfgs, paper_results

pytestmark = pytest.mark.usefixtures('single_thread')

REPO_ROOT = Path(__file__).parent.parent
VARIANTS = tuple(model_cfgs)


def assert_authors_logits(model: torch.nn.Module, variant: str = '294m') -> None:
    """The model's logits on the golden inputs are the authors' (relative 1e-4)."""
    expected = official_state_dict(variant)[1]
    with torch.no_grad():
        for name, x in golden_inputs().items():
            out = model.eval()(x)
            assert float((out - expected[name]).abs().max() / expected[name].abs().max()) < 1e-4, name


def test_cfgs_name_hub_ids_top1_origin_and_license():
    assert set(timm.list_models('mobileformer_*', pretrained=True)) == {f'{v}.in1k' for v in VARIANTS}
    for variant in VARIANTS:
        cfg = timm.get_pretrained_cfg(variant).to_dict()
        assert cfg['tag'] == 'in1k' and cfg['hf_hub_id'] == f'{HUB_ORG}/{variant}.in1k' == hub_id(variant)
        assert cfg['hf_hub_filename'] == 'model.safetensors'
        assert f'{paper_results[variant][2]}%' in cfg['notes'][0]
        assert cfg['origin_url'].startswith('https://drive.google.com/')
        assert cfg['license'] == 'unknown' and 'without a license' in cfg['notes'][1]


@pytest.mark.parametrize('variant', ['294m', '52m'])
def test_pretrained_true_reproduces_authors_logits(offline_hub, variant):
    assert_authors_logits(timm.create_model(f'mobileformer_{variant}', pretrained=True), variant)


@pytest.mark.parametrize('name', [f'hf-hub:{HUB_ORG}/mobileformer_294m.in1k', 'mobileformer_294m.in1k'])
def test_hub_names_reproduce_authors_logits(offline_hub, name):
    assert_authors_logits(timm.create_model(name, pretrained=True))


def test_local_dir_reproduces_authors_logits(converted):
    assert_authors_logits(timm.create_model(f"local-dir:{converted['mobileformer_294m']}", pretrained=True))


def test_torch_hub_load_reproduces_authors_logits(offline_hub):
    model = torch.hub.load(str(REPO_ROOT), 'mobileformer_294m', source='local', pretrained=True)
    assert_authors_logits(model)


def test_features_only_pretrained_gives_pretrained_features(offline_hub):
    backbone = timm.create_model('mobileformer_294m', features_only=True, pretrained=True).eval()
    classifier = timm.create_model('mobileformer_294m', pretrained=True).eval()
    x = golden_inputs()['x224'][:1]
    with torch.no_grad():
        features = backbone(x)
        expected = classifier.forward_intermediates(x, intermediates_only=True)
    assert len(features) == len(expected) == 5
    for feat, ref in zip(features, expected):
        torch.testing.assert_close(feat, ref)


def test_new_num_classes_replaces_only_the_classifier(offline_hub):
    reference = timm.create_model('mobileformer_294m', pretrained=True).state_dict()
    adapted = timm.create_model('mobileformer_294m', pretrained=True, num_classes=10).state_dict()
    assert adapted['head.fc.weight'].shape == (10, reference['head.fc.weight'].shape[1])
    assert set(adapted) == set(reference)
    for key in reference:
        if not key.startswith('head.fc.'):
            assert torch.equal(adapted[key], reference[key]), key


def test_one_input_channel_adapts_the_stem_the_timm_way(offline_hub):
    reference = timm.create_model('mobileformer_294m', pretrained=True).state_dict()
    gray = timm.create_model('mobileformer_294m', pretrained=True, in_chans=1)
    adapted = gray.state_dict()
    # timm sums the RGB filters of the first conv for one channel
    torch.testing.assert_close(adapted['stem.conv.weight'], reference['stem.conv.weight'].sum(dim=1, keepdim=True))
    for key in reference:
        if key != 'stem.conv.weight':
            assert torch.equal(adapted[key], reference[key]), key
    assert gray.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize('variant', VARIANTS)
def test_timm_pretrained_tests_pass(offline_hub, timm_tests, variant):
    timm_tests.test_model_load_pretrained(f'{variant}.in1k', 1)
    timm_tests.test_model_features_pretrained(f'{variant}.in1k', 1)


def assert_names_the_ways_out(message: str, variant: str = 'mobileformer_294m') -> None:
    assert '\n' not in message
    assert hub_id(variant) in message
    assert f'timm-mobileformer convert {authors_filename(variant)} --out DIR' in message
    assert "local-dir:DIR" in message
    assert f"pretrained_cfg_overlay=dict(file='{authors_filename(variant)}')" in message


def test_offline_without_weights_names_hub_id_and_ways_out(empty_offline_hub):
    with pytest.raises(WeightsUnreachableError) as excinfo:
        timm.create_model('mobileformer_294m', pretrained=True)
    assert_names_the_ways_out(str(excinfo.value))
    assert 'LocalEntryNotFoundError' in str(excinfo.value)


def test_unpublished_repo_names_hub_id_and_ways_out(monkeypatch):
    def repo_not_found(repo_id, *args, **kwargs):
        url = f'https://huggingface.co/{repo_id}/resolve/main/model.safetensors'
        raise RepositoryNotFoundError('404', response=httpx2.Response(404, request=httpx2.Request('HEAD', url)))

    monkeypatch.setattr(timm.models._hub, 'hf_hub_download', repo_not_found)
    monkeypatch.setattr(timm_mobileformer.hub, '_hub_reachable', True)  # the Hub answers, the repo does not exist
    for name in ('mobileformer_26m', 'mobileformer_26m.in1k'):
        with pytest.raises(WeightsUnreachableError) as excinfo:
            timm.create_model(name, pretrained=True)
        assert_names_the_ways_out(str(excinfo.value), 'mobileformer_26m')
        assert 'RepositoryNotFoundError' in str(excinfo.value)


def test_wrong_variant_file_still_raises_the_filters_error(authors_files):
    path = authors_files['mobileformer_52m']
    with pytest.raises(ValueError, match='mobileformer_294m') as excinfo:
        timm.create_model('mobileformer_294m', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not isinstance(excinfo.value, WeightsUnreachableError)


def test_offline_failure_is_one_clean_exception(empty_offline_hub):
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError) as excinfo:
        timm.create_model('mobileformer_26m', pretrained=True)
    assert time.monotonic() - start < 10
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert 'pretrained_cfg_overlay' in str(excinfo.value)


def test_unreachable_hub_fails_fast_without_offline_mode(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but no route to the Hub: one probe, no retries, the cache still consulted."""
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(hf_constants, 'ENDPOINT', 'http://127.0.0.1:9')
    monkeypatch.setattr(timm_mobileformer.hub, '_hub_reachable', None)
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError, match='no connection to 127.0.0.1'):
        timm.create_model('mobileformer_26m', pretrained=True)
    assert time.monotonic() - start < 10
    assert hf_constants.HF_HUB_OFFLINE is False


def test_damaged_file_in_the_hub_cache_is_named(user_files, converted, tmp_path, monkeypatch):
    damaged = tmp_path / 'damaged'
    damaged.mkdir()
    for path in converted['mobileformer_26m'].iterdir():
        data = path.read_bytes()
        (damaged / path.name).write_bytes(data[:1000] if path.name == 'model.safetensors' else data)
    snapshot = install_in_hub_cache(damaged, hub_id('mobileformer_26m'), tmp_path / 'cache')
    go_offline(monkeypatch, tmp_path / 'cache')
    message = error_line(['predict', str(user_files['png']), '--model', '26m'], allow_warnings=False)
    assert str(snapshot / 'model.safetensors') in message and 'truncated or corrupt' in message
