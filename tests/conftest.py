"""Registers the models before any test module builds its model lists, and keeps timm's own suite
(tests/timm_suite/test_models.py, fetched by tests/fetch_timm_tests.py) to the mobileformer_* cases."""
import sys
from pathlib import Path

import timm_mobileformer  # noqa: F401  (registers the models)

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
TIMM_SUITE = TESTS / 'timm_suite'


# timm's pretrained tests need the emulated Hub: test_hub.py runs them for all seven variants against it
HUB_TESTS = ('test_model_load_pretrained', 'test_model_features_pretrained')


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
