"""timm's contract tests that its suite runs only for timm's own modules, called on our models (`timm_tests`:
timm's tests/test_models.py, from conftest_hub)."""
import pytest
import timm

VARIANTS = timm.list_models('mobileformer_*')


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
