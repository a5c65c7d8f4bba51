"""Numerical equivalence with the authors' network, through the public pretrained path."""
import pytest
import timm
import torch
from official import GOLDEN_VARIANTS, golden_inputs, official_state_dict


def load_authors_file(variant: str, sd: dict, tmp_path) -> torch.nn.Module:
    path = tmp_path / f'mobile-former-{variant}.pth.tar'
    torch.save({'state_dict': sd, 'epoch': 450, 'arch': f'mobile_former_{variant}'}, path)
    return timm.create_model(f'mobileformer_{variant}', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def max_rel_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize('variant', GOLDEN_VARIANTS)
def test_matches_authors_logits(variant, tmp_path):
    sd, expected = official_state_dict(variant)
    model = load_authors_file(variant, sd, tmp_path).eval()
    with torch.no_grad():
        for name, x in golden_inputs().items():
            out = model(x)
            assert out.shape == expected[name].shape
            assert max_rel_diff(out, expected[name]) < 1e-4, name


@pytest.mark.parametrize('variant', GOLDEN_VARIANTS)
def test_equivalence_survives_channels_last_and_checkpointing(variant, tmp_path):
    sd, expected = official_state_dict(variant)
    model = load_authors_file(variant, sd, tmp_path).eval()
    model.set_grad_checkpointing(True)
    x = golden_inputs()['x224']
    with torch.no_grad():
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert max_rel_diff(out, expected['x224']) < 1e-4


def test_module_prefix_and_bare_state_dict_load(tmp_path):
    sd, expected = official_state_dict('52m')
    prefixed = {f'module.{k}': v for k, v in sd.items()}
    model = load_authors_file('52m', prefixed, tmp_path).eval()
    with torch.no_grad():
        assert max_rel_diff(model(golden_inputs()['x224']), expected['x224']) < 1e-4
