"""Every recipe under recipes/ is the authors' train.py command for its variant (the table in the
authors' README, spec section 17) plus the timm 0.3.4 defaults that command relied on."""
from pathlib import Path

import pytest
import yaml

from timm_mobileformer.mobileformer import model_cfgs

RECIPES = Path(__file__).resolve().parent.parent / 'recipes'

# variant: (lr, weight decay, head dropout, mixup alpha, aa, reprob) from the authors' commands
AUTHORS = {
    '508m': (1e-3, 0.20, 0.3, 0.2, 'rand-m9-mstd0.5', 0.2),
    '294m': (1e-3, 0.20, 0.3, 0.2, 'rand-m9-mstd0.5', 0.2),
    '214m': (9e-4, 0.15, 0.2, 0.2, 'rand-m9-mstd0.5', 0.2),
    '151m': (9e-4, 0.10, 0.2, 0.2, 'rand-m9-mstd0.5', 0.2),
    '96m': (8e-4, 0.10, 0.2, 0.0, 'rand-m9-mstd0.5', 0.0),
    '52m': (8e-4, 0.10, 0.2, 0.2, None, 0.0),
    '26m': (8e-4, 0.08, 0.1, 0.2, 'rand-m9-mstd0.5', 0.0),
}
# shared by all seven: the rest of the authors' command and the timm 0.3.4 defaults it relied on
COMMON = dict(
    device_modules=['timm_mobileformer'], batch_size=128, grad_accum_steps=1, opt='adamw', opt_eps=1e-8,
    sched='cosine', epochs=450, warmup_epochs=3, warmup_lr=1e-4, min_lr=1e-5, cooldown_epochs=10,
    sched_on_updates=False, drop_path=0.0, smoothing=0.1, mixup_prob=1.0, mixup_switch_prob=0.5,
    mixup_mode='batch', cutmix=0.0, remode='pixel', recount=1, color_jitter=0.0, scale=[0.08, 1.0],
    ratio=[0.75, 4 / 3], hflip=0.5, train_interpolation='random', model_ema=False, amp=False, sync_bn=False,
    dist_bn='',
)


def load(variant: str) -> dict:
    return yaml.safe_load((RECIPES / f'mobileformer_{variant}.yaml').read_text())


def test_one_recipe_per_variant():
    assert sorted(p.stem for p in RECIPES.glob('*.yaml')) == sorted(model_cfgs)
    assert sorted(f'mobileformer_{v}' for v in AUTHORS) == sorted(model_cfgs)


@pytest.mark.parametrize('variant', AUTHORS)
def test_recipe_is_the_authors_command(variant):
    recipe = load(variant)
    lr, wd, drop, mixup, aa, reprob = AUTHORS[variant]
    assert recipe['model'] == f'mobileformer_{variant}'
    assert recipe['lr'] == pytest.approx(lr)
    assert recipe['weight_decay'] == pytest.approx(wd)
    assert recipe['drop'] == pytest.approx(drop)
    assert recipe['mixup'] == pytest.approx(mixup)
    assert recipe['aa'] == aa
    assert recipe['reprob'] == pytest.approx(reprob)
    for key, value in COMMON.items():
        assert recipe[key] == pytest.approx(value) if isinstance(value, (float, list)) else recipe[key] == value, key
