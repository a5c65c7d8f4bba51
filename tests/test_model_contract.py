"""The Mobile-Former models: structure against the authors' numbers, timm's model contract, clear errors."""
import re

import pytest
import timm
import torch
import torch.nn as nn
from official import official_keys, seeded_state_dict

from timm_mobileformer import checkpoint_filter_fn
from timm_mobileformer.info import count_madds, count_params, format_table, measure
from timm_mobileformer.mobileformer import DynamicReLU, MobileFormerBlock, MobileToFormer

# the authors' code, measured: exact parameter counts and conv + linear + matmul MAdds (M) at 224
AUTHORS = {
    '508m': (13_976_976, 498.47),
    '294m': (11_422_648, 286.73),
    '214m': (9_425_920, 208.37),
    '151m': (7_595_828, 146.25),
    '96m': (4_585_252, 92.02),
    '52m': (3_469_092, 49.29),
    '26m': (3_232_788, 23.55),
}
VARIANTS = list(AUTHORS)


def create(variant: str, **kwargs) -> nn.Module:
    return timm.create_model(f'mobileformer_{variant}', **kwargs)


@pytest.mark.parametrize('variant', VARIANTS)
def test_params_and_madds_equal_the_authors(variant):
    model = create(variant)
    params, madds = AUTHORS[variant]
    assert count_params(model) == params
    assert abs(count_madds(model) / 1e6 - madds) <= 0.1


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_authors_tensor_has_its_place(variant):
    """The authors' key layout converts to exactly this model's state dict, shapes included."""
    model = create(variant)
    converted = checkpoint_filter_fn({'state_dict': seeded_state_dict(variant)}, model)
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert {k: v.shape for k, v in converted.items()} == expected
    model.load_state_dict(converted, strict=False)
    n_official = sum(not k.endswith('num_batches_tracked') for k in official_keys(variant))
    assert len(converted) == n_official


def test_converted_state_dict_passes_through():
    model = create('52m')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert out.keys() == sd.keys() and all(out[k] is sd[k] for k in sd)


def test_wrong_variant_is_refused_with_names(tmp_path):
    model = create('294m')
    with pytest.raises(ValueError, match=r'does not fit mobileformer_294m.*mobileformer_52m.*Nothing was loaded'):
        checkpoint_filter_fn({'state_dict': seeded_state_dict('52m')}, model)


def test_missing_or_extra_tensors_are_refused():
    model = create('52m')
    sd = seeded_state_dict('52m')
    missing = {k: v for k, v in sd.items() if not k.startswith('features.3.global_block')}
    with pytest.raises(ValueError, match=r'missing \(e\.g\. blocks\.3\.former'):
        checkpoint_filter_fn(missing, model)
    with pytest.raises(ValueError, match=r'1 unexpected \(e\.g\. extra\.weight\)'):
        checkpoint_filter_fn(dict(sd, **{'extra.weight': torch.zeros(1)}), model)


def test_wrong_checkpoint_fails_through_create_model_without_partial_load(tmp_path):
    path = tmp_path / 'mobile-former-52m.pth.tar'
    torch.save({'state_dict': seeded_state_dict('52m')}, path)
    with pytest.raises(ValueError, match='does not fit mobileformer_26m'):
        create('26m', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize('variant', VARIANTS)
def test_feature_maps_at_strides_2_to_32(variant):
    model = create(variant, features_only=True).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(96 // r, 64 // r) for r in (2, 4, 8, 16, 32)]
    assert [f.shape[1] for f in feats] == model.feature_info.channels()


def test_features_only_out_indices():
    model = create('294m', features_only=True, out_indices=(2, 3, 4)).eval()
    assert model.feature_info.channels() == [48, 128, 192]
    with torch.no_grad():
        assert [f.shape[1] for f in model(torch.randn(1, 3, 64, 64))] == [48, 128, 192]


@pytest.mark.parametrize('size', [(32, 32), (33, 47), (64, 40), (160, 224)])
def test_any_input_size_from_32px(size):
    model = create('26m').eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize('variant', ['26m', '294m'])
def test_eval_outputs_identical_across_execution_forms(variant):
    """Grad checkpointing and channels_last change nothing in eval (test_speed_forms.py compiles every variant
    with torch.compile(fullgraph=True))."""
    torch.manual_seed(0)
    model = create(variant).eval()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
        model.set_grad_checkpointing(False)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-6)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = create('26m', num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('bad, error, message', [
    (torch.randn(3, 64, 64), ValueError, r'4-D image batch \(N, 3, H, W\); got a 3-D tensor .*unsqueeze\(0\)'),
    (torch.randn(1, 1, 64, 64), ValueError, r'built for 3 input channels; got 1 .*in_chans=1'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, r'floating point image batch; got dtype torch.uint8'),
])
def test_bad_input_gets_a_clear_error(bad, error, message):
    model = create('26m').eval()
    with pytest.raises(error, match=message):
        model(bad)
    with pytest.raises(error, match=message):
        model.forward_intermediates(bad)


def test_empty_batch_gets_a_clear_error():
    with pytest.raises(ValueError, match='empty batch|batch size 0'):
        create('26m').eval()(torch.zeros(0, 3, 64, 64))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
def test_other_float_dtypes_get_a_clear_error(dtype):
    with pytest.raises(TypeError, match='float32'):
        create('26m').eval()(torch.zeros(1, 3, 64, 64, dtype=dtype))


def test_training_on_a_batch_of_one_gets_a_clear_error():
    with pytest.raises(ValueError, match='batch of one|batch size 1'):
        create('26m').train()(torch.zeros(1, 3, 64, 64))


def test_unknown_kwarg_and_unknown_variant():
    with pytest.raises(TypeError):
        create('26m', not_an_arg=1)
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('mobileformer_999m')


def test_head_api():
    model = create('294m').eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1152 + 192, 2, 2) and model.num_features == 1344
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 1920) and model.head_hidden_size == 1920
        hidden = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('head.fc.')}
        model.reset_classifier(10)
        assert model.get_classifier().out_features == 10 and model(x).shape == (2, 10)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in hidden.items())
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
        model.reset_classifier(0, '')
        assert model(x).shape == feats.shape
    unpooled = create('294m', num_classes=0, global_pool='').eval()
    assert unpooled(x).shape == feats.shape


def test_token_broadcast_in_merged_map_is_token_zero():
    """The token channels of forward_features are token 0 after the final bridge, constant over the map."""
    model = create('52m').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
    token = feats[:, 576:]
    assert token.shape[1] == 128
    torch.testing.assert_close(token, token[:, :, :1, :1].expand_as(token), rtol=0, atol=0)


def test_authors_initialisation():
    torch.manual_seed(0)
    model = create('294m')
    tokens = model.tokens.detach()
    assert abs(tokens.std().item() - 1) < 0.15
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(abs(m.weight.std().item() - 0.01) < 0.002 and not m.bias.any() for m in fcs if m.weight.numel() > 4096)
    stem = model.stem.conv.weight
    assert abs(stem.std().item() - (2 / (9 * 16)) ** 0.5) < 0.03
    dw = model.blocks[2].mobile.conv_dw.conv.weight  # fan-out uses out_channels even for depthwise
    assert abs(dw.std().item() - (2 / (9 * dw.shape[0])) ** 0.5) < 0.02


def test_dynamic_relu_is_relu_and_gate_is_one_at_init():
    torch.manual_seed(0)
    model = create('294m')
    act = next(m for m in model.modules() if isinstance(m, DynamicReLU))
    token = model.tokens[:1]
    k1, k2 = act.slopes(token)
    assert torch.allclose(k1, torch.ones_like(k1), atol=0.02) and torch.allclose(k2, torch.zeros_like(k2), atol=0.02)
    bridge = next(m for m in model.modules() if isinstance(m, MobileToFormer))
    gate = 2 * torch.nn.functional.hardsigmoid(bridge.gate(model.tokens))
    assert abs(gate.mean().item() - 1) < 0.02 and torch.allclose(gate, torch.ones_like(gate), atol=0.25)


def test_drop_path_schedule_follows_the_authors():
    """Block i of L gets rate * (i + 1) / L on the bridges, Former attention and Mobile skip; the final
    bridge the full rate; the Former FFN none."""
    model = create('52m', drop_path_rate=0.2)
    n = len(model.blocks)
    for i, block in enumerate(model.blocks):
        if isinstance(block, MobileFormerBlock):
            expected = 0.2 * (i + 1) / n
            for m in (block.mobile_to_former, block.former, block.mobile, block.former_to_mobile):
                assert m.drop_path.drop_prob == pytest.approx(expected)
    assert model.merge.bridge.drop_path.drop_prob == pytest.approx(0.2)


def test_drop_rate_is_the_head_dropout():
    model = create('26m', drop_rate=0.3)
    assert model.head.drop.p == 0.3


def test_group_matcher_and_no_weight_decay():
    model = create('26m')
    matcher = model.group_matcher()
    names = [n for n, _ in model.named_parameters()]
    assert all(re.match(matcher['stem'], n) for n in names if n.startswith(('tokens', 'stem')))
    assert model.no_weight_decay() == set()  # the authors decay the token table


def test_hubconf_local(tmp_path):
    root = str(__import__('pathlib').Path(__file__).parents[1])
    model = torch.hub.load(root, 'mobileformer_294m', source='local', num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_info_table_is_measured():
    row = measure('mobileformer_26m', img_size=224)
    assert row['params'] == AUTHORS['26m'][0] and row['feature_strides'] == [2, 4, 8, 16, 32]
    assert row['output_shape'] == (1, 1000)
    table = format_table([row])
    assert 'mobileformer_26m' in table and '3,232,788' in table and '23.55' in table and '64.0%' in table
