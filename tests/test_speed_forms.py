"""The fast forms compute what the plain model computes: fused vs unfused, channels_last vs contiguous,
compiled vs eager, the dynamic ReLU against its max form, and the authors' logits after fusing."""
import copy

import pytest
import timm
import torch
import torch.nn as nn
from official import GOLDEN_VARIANTS, golden_inputs, official_state_dict
from timm.utils import reparameterize_model

from timm_mobileformer.attention import token_attention
from timm_mobileformer.layers.ops import dynamic_relu
from timm_mobileformer.mobileformer import DynamicReLU, model_cfgs

VARIANTS = [v[len('mobileformer_'):] for v in model_cfgs]
CL = torch.channels_last


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


def randomized(variant: str, seed: int = 0, **kwargs) -> nn.Module:
    """An eval model whose BatchNorm statistics and biases are far from their init, so folding them matters."""
    torch.manual_seed(seed)
    model = timm.create_model(f'mobileformer_{variant}', **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0., 0.2)
                m.running_var.uniform_(0.5, 2.)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0., 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0., m.weight.shape[1] ** -0.5)
                m.bias.normal_(0., 0.5)
    return model.eval()


def image(batch: int = 2, h: int = 64, w: int = 80, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('variant', VARIANTS)
def test_fused_matches_unfused(variant):
    model = randomized(variant)
    x = image()
    with torch.no_grad():
        ref = model(x)
        ref_feats = model.forward_intermediates(x, intermediates_only=True)
        fused = copy.deepcopy(model).fuse()
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        assert rel(fused(x), ref) < 1e-5
        assert rel(fused(x[:1]), ref[:1]) < 1e-5  # batch 1: 1x1 convs run as matrix products
        for f, r in zip(fused.forward_intermediates(x, intermediates_only=True), ref_feats):
            assert f.is_contiguous(memory_format=CL) and rel(f, r) < 1e-5
        assert rel(fused.fuse()(x), ref) < 1e-5  # idempotent
        assert rel(reparameterize_model(model)(x), ref) < 1e-5  # timm's path, NCHW
        assert rel(copy.deepcopy(model).fuse(channels_last=False)(x[:1]), ref[:1]) < 1e-5


@pytest.mark.parametrize('variant', VARIANTS)
def test_channels_last_matches_contiguous(variant):
    model = randomized(variant)
    x = image(h=72, w=56)
    with torch.no_grad():
        ref = model(x)
        cl = copy.deepcopy(model).to(memory_format=CL)
        assert rel(cl(x.contiguous(memory_format=CL)), ref) < 1e-5
        assert rel(cl(x), ref) < 1e-5  # channels_last weights, NCHW input


@pytest.mark.parametrize('variant', VARIANTS)
def test_channels_last_training_step_matches(variant):
    """Forward and backward of the channels_last paths (SDPA, block-diagonal bridge), in float64 so that
    train-mode BatchNorm cannot hide a difference in float32 noise."""
    model = randomized(variant).train().double()
    x = image(batch=3, h=48, w=64).double()
    grads = []
    for fmt in (torch.contiguous_format, CL):
        m = copy.deepcopy(model).to(memory_format=fmt)
        m(x.contiguous(memory_format=fmt)).logsumexp(1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert rel(grads[1], grads[0]) < 1e-9


@pytest.mark.parametrize('variant', ['26m', '294m'])
def test_compiled_matches_eager(variant):
    """torch.compile captures the whole model (fullgraph) and computes the same, unfused and fused: on 26m (its
    channel shuffles and grouped convs) and 294m (the plain wide form); the other variants build from the same
    modules, and their fused forms are checked above."""
    torch._dynamo.reset()
    model = randomized(variant)
    x = image(h=64, w=64)
    with torch.no_grad():
        ref = model(x)
        assert rel(torch.compile(model, fullgraph=True, backend='aot_eager')(x), ref) < 1e-5
        fused = copy.deepcopy(model).fuse()
        assert rel(torch.compile(fused, fullgraph=True, backend='aot_eager')(x), ref) < 1e-5


@pytest.mark.parametrize('variant', GOLDEN_VARIANTS)
def test_fused_keeps_the_authors_logits(variant, tmp_path):
    sd, expected = official_state_dict(variant)
    path = tmp_path / f'mobile-former-{variant}.pth.tar'
    torch.save({'state_dict': sd}, path)
    model = timm.create_model(f'mobileformer_{variant}', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    model.fuse()
    with torch.no_grad():
        for name, x in golden_inputs().items():
            assert rel(model(x), expected[name]) < 1e-4, name


def test_dynamic_relu_equals_the_max_form():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 6)
    k1 = torch.rand(3, 5, 1, 1) * 2
    k2 = torch.rand(3, 5, 1, 1) * 2 - 1
    k1[0, :2] = 0.  # kpos == 0 for the channels where k2 <= 0 too
    k2[0, :2] = torch.tensor([-0.5, 0.]).reshape(2, 1, 1)
    k1[1, 0] = k2[1, 0] = 0.3  # equal slopes
    ref = torch.maximum(x * k1, x * k2)
    assert torch.allclose(dynamic_relu(x, k1, k2), ref, rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        assert torch.allclose(dynamic_relu(x.clone(), k1, k2), ref, rtol=1e-6, atol=1e-9)
    x_cl = x.contiguous(memory_format=CL)
    assert torch.allclose(dynamic_relu(x_cl, k1, k2), ref, rtol=1e-6, atol=1e-9)


def test_dynamic_relu_gradients_equal_the_max_form():
    """Away from ties (x == 0 or k1 == k2, where subgradients may differ) the gradients are those of max."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    k1 = torch.rand(2, 4, 1, 1, dtype=torch.float64) * 2
    k2 = torch.rand(2, 4, 1, 1, dtype=torch.float64) * 2 - 1
    w = torch.randn_like(x)
    grads = []
    for fn in (dynamic_relu, lambda a, b, c: torch.maximum(a * b, a * c)):
        leaves = [t.clone().requires_grad_() for t in (x, k1, k2)]
        (fn(*leaves) * w).sum().backward()
        grads.append([t.grad for t in leaves])
    for got, want in zip(*grads):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fused_dynamic_relu_slopes_equal_unfused():
    torch.manual_seed(0)
    act = DynamicReLU(16, 32)
    nn.init.normal_(act.fc2.weight, 0., 2.)  # drive the hard sigmoid into both clamps
    token = torch.randn(4, 32)
    ref = act.slopes(token)
    fused = act.fuse().slopes(token)
    for f, r in zip(fused, ref):
        assert torch.allclose(f, r, atol=1e-6)


def test_attention_maps_survive_fusing():
    model = randomized('52m')
    x = image()
    with torch.no_grad():
        _, ref = token_attention(model, x)
        _, fused = token_attention(copy.deepcopy(model).fuse(), x)
    pairs = ((fused.mobile_to_former, ref.mobile_to_former), (fused.former_to_mobile, ref.former_to_mobile))
    for maps, ref_maps in pairs:
        assert maps.keys() == ref_maps.keys()
        for k in maps:
            assert torch.allclose(maps[k], ref_maps[k], atol=1e-5), k
