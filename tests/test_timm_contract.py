"""timm's contract tests that its suite runs only for timm's own modules, called on our models."""
import importlib.util

import pytest
import timm

from conftest import TIMM_SUITE

VARIANTS = timm.list_models('mobileformer_*')


@pytest.fixture(scope='module')
def timm_tests():
    path = TIMM_SUITE / 'test_models.py'
    if not path.exists():
        pytest.fail(f'{path} is missing: run `python tests/fetch_timm_tests.py` first (it needs the package registry)')
    spec = importlib.util.spec_from_file_location('timm_test_models', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_seven_variants_registered():
    assert VARIANTS == [f'mobileformer_{v}' for v in ('26m', '52m', '96m', '151m', '214m', '294m', '508m')]


@pytest.mark.parametrize('model_name', VARIANTS)
def test_forward_intermediates(timm_tests, model_name):
    timm_tests.test_model_forward_intermediates(model_name, 1)


@pytest.mark.parametrize('model_name', VARIANTS)
def test_forward_intermediates_features(timm_tests, model_name):
    timm_tests.test_model_forward_intermediates_features(model_name, 1)


@pytest.mark.parametrize('model_name', VARIANTS)
def test_prune_intermediate_layers_contract(timm_tests, model_name):
    timm_tests.test_prune_intermediate_layers_contract(model_name)
