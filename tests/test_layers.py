"""Every fast form in timm_mobileformer/layers computes what its plain form computes, values and gradients;
every weight fold of layers/folds.py computes what its plain part computes; the model file states the math
plainly and leaves the choice of implementation to layers/ops.py."""
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_mobileformer.layers import folds, fused, kernels, ops
from timm_mobileformer.mobileformer import DynamicReLU, FormerToMobile, MobileToFormer, conv_norm

CL = torch.channels_last


def _leaves(*tensors: torch.Tensor):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _values_and_grads(fn, inputs, weight):
    leaves = _leaves(*inputs)
    out = fn(*leaves)
    (out * weight).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _assert_same(fast, plain, inputs, rtol=1e-10, atol=1e-12):
    """fast and plain agree on the output and on every input's gradient (float64 inputs)."""
    with torch.no_grad():
        ref = plain(*inputs)
    weight = torch.randn_like(ref)
    got, got_grads = _values_and_grads(fast, inputs, weight)
    want, want_grads = _values_and_grads(plain, inputs, weight)
    assert torch.allclose(got, want, rtol=rtol, atol=atol)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=rtol, atol=atol)


def _slopes(b: int, c: int):
    k1 = torch.rand(b, c, 1, 1, dtype=torch.float64) * 2
    k2 = torch.rand(b, c, 1, 1, dtype=torch.float64) * 2 - 1
    return k1, k2


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_dynamic_relu_kernel_equals_the_max_form(layout):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=CL)
    _assert_same(kernels.dynamic_relu, ops.dynamic_relu_plain, (x, *_slopes(2, 6)))
    k1, k2 = _slopes(2, 6)
    with torch.no_grad():  # the in-place inference path
        assert torch.allclose(kernels.dynamic_relu(x.clone(), k1, k2), ops.dynamic_relu_plain(x, k1, k2))


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_tokens_read_pixels_kernel_equals_plain(layout):
    torch.manual_seed(0)
    q = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=CL)
    _assert_same(lambda a, b: kernels.tokens_read_pixels(a, b, 0.5),
                 lambda a, b: ops.tokens_read_pixels_plain(a, b, 0.5), (q, x))


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
@pytest.mark.parametrize('add', [False, True])
def test_pixels_read_tokens_kernel_equals_plain(layout, add):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=CL)
    k, v = torch.randn(2, 2, 3, 4, dtype=torch.float64), torch.randn(2, 2, 3, 4, dtype=torch.float64)

    def plain(x, k, v):
        out = ops.pixels_read_tokens_plain(x, k, v, 0.5)
        return x + out if add else out
    _assert_same(lambda x, k, v: kernels.pixels_read_tokens(x, k, v, 0.5, add), plain, (x, k, v))


def test_channel_shuffle_native_equals_plain():
    x = torch.arange(2 * 12 * 3 * 3, dtype=torch.float32).reshape(2, 12, 3, 3)
    assert torch.equal(F.channel_shuffle(x, 4), ops.channel_shuffle_plain(x, 4))
    assert torch.equal(ops.channel_shuffle(x.contiguous(memory_format=CL), 4), ops.channel_shuffle_plain(x, 4))


def test_ops_take_the_plain_forms_when_a_graph_is_traced():
    seen = []

    def fn(x):
        seen.append(ops.use_eager_kernels())
        return x
    torch.jit.trace(fn, torch.zeros(1), check_trace=False)
    assert seen and not any(seen)
    seen.clear()
    fn(torch.zeros(1))
    assert seen == [True]


@pytest.mark.parametrize('kind, shape', [
    ('pointwise', (1, 16, 7, 9)),     # a 1x1 conv on one channels_last image runs as a matrix product
    ('multiplier', (2, 8, 14, 14)),   # a depthwise conv with a channel multiplier on a small map: repeat + depthwise
    ('plain', (2, 8, 40, 40)),         # the same on a large map: torch's conv
])
@pytest.mark.parametrize('relu6', [False, True])
def test_folded_conv_kernels_equal_conv_then_batchnorm(kind, shape, relu6):
    torch.manual_seed(0)
    c = shape[1]
    if kind == 'pointwise':
        block = conv_norm(c, 24, act_layer=nn.ReLU6 if relu6 else None)
    else:
        block = conv_norm(c, 3 * c, 3, groups=c, act_layer=nn.ReLU6 if relu6 else None)
    for p in block.bn.parameters():
        nn.init.normal_(p)
    block.bn.running_mean.normal_()
    block.bn.running_var.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(shape)
    folded = block.fuse()
    assert isinstance(folded, fused.FoldedConv)
    with torch.no_grad():
        ref = block(x)
        for inp in (x, x.contiguous(memory_format=CL)):
            assert torch.allclose(folded(inp), ref, rtol=1e-5, atol=1e-5)


def test_fused_dynamic_relu_equals_plain():
    torch.manual_seed(0)
    act = DynamicReLU(16, 32).eval()
    nn.init.normal_(act.fc2.weight, 0., 2.)  # drive the hard sigmoid into both clamps
    x, token = torch.randn(4, 16, 5, 5), torch.randn(4, 32)
    with torch.no_grad():
        assert torch.allclose(act.fuse()(x, token), act(x, token), atol=1e-5)


def test_fused_bridges_equal_plain():
    torch.manual_seed(0)
    m2f, f2m = MobileToFormer(8, 32).eval(), FormerToMobile(8, 32).eval()
    for m in (m2f, f2m):
        for p in m.parameters():
            nn.init.normal_(p, 0., 0.5)
    x, tokens = torch.randn(2, 8, 5, 6), torch.randn(2, 3, 32)
    with torch.no_grad():
        assert torch.allclose(m2f.fuse()(x, tokens), m2f(x, tokens), atol=1e-5)
        assert torch.allclose(f2m.fuse()(x, tokens), f2m(x, tokens), atol=1e-5)
        assert torch.allclose(m2f.fuse().attention(x, tokens), m2f.attention(x, tokens), atol=1e-6)
        assert torch.allclose(f2m.fuse().attention(x, tokens), f2m.attention(x, tokens), atol=1e-6)


F64 = torch.float64


def _randomized_norm(norm: nn.modules.batchnorm._BatchNorm) -> None:
    """BatchNorm statistics and affine parameters away from their init, so that folding them matters."""
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.)
        norm.weight.normal_(1., 0.3)
        norm.bias.normal_()


def _detached(weights) -> bool:
    return not any(t.requires_grad for t in weights)


@pytest.mark.parametrize('groups, stride', [(1, 1), (4, 2), (8, 1)])
def test_conv_norm_weights_equal_conv_then_batchnorm(groups, stride):
    torch.manual_seed(0)
    block = conv_norm(8, 16, 3, stride, groups=groups, dtype=F64)
    _randomized_norm(block.bn)
    block.eval()
    weights = folds.conv_norm_weights(block)
    x = torch.randn(2, 8, 9, 7, dtype=F64)
    with torch.no_grad():
        assert torch.allclose(F.conv2d(x, *weights, stride, 1, 1, groups), block(x))
    assert _detached(weights)


def test_hard_sigmoid_weights_fold_twice_the_hard_sigmoid():
    torch.manual_seed(0)
    linear = nn.Linear(6, 10, dtype=F64)
    x = torch.randn(50, 6, dtype=F64) * 4  # both clamps reached
    weights = folds.hard_sigmoid_weights(linear)
    with torch.no_grad():
        assert torch.allclose(F.linear(x, *weights).clamp(0., 2.), 2. * F.hardsigmoid(linear(x)))
    assert _detached(weights)


def test_scaled_weights_scale_the_output():
    torch.manual_seed(0)
    linear = nn.Linear(6, 10, dtype=F64)
    x = torch.randn(5, 6, dtype=F64)
    weights = folds.scaled_weights(linear, 0.25)
    with torch.no_grad():
        assert torch.allclose(F.linear(x, *weights), 0.25 * linear(x))
    assert _detached(weights)


def test_linear_norm_weights_equal_linear_then_batchnorm1d():
    torch.manual_seed(0)
    fc, norm = nn.Linear(6, 10, dtype=F64), nn.BatchNorm1d(10, dtype=F64)
    _randomized_norm(norm)
    norm.eval()
    x = torch.randn(5, 6, dtype=F64)
    weights = folds.linear_norm_weights(fc, norm)
    with torch.no_grad():
        assert torch.allclose(F.linear(x, *weights), norm(fc(x)))
    assert _detached(weights)


def test_shuffle_perm_and_its_inverse():
    x = torch.randn(2, 12, 3, 3)
    perm = folds.shuffle_perm(12, 4)
    assert torch.equal(x[:, perm], ops.channel_shuffle_plain(x, 4))
    assert torch.equal(ops.channel_shuffle_plain(x, 4)[:, folds.inverse_perm(perm)], x)


def test_take_gives_zeros_for_index_minus_one():
    t = torch.arange(1., 7.).reshape(2, 3).requires_grad_()
    taken = folds.take(t, torch.tensor([2, -1, 0]), 1)
    assert torch.equal(taken, torch.tensor([[3., 0., 1.], [6., 0., 4.]])) and not taken.requires_grad


def test_dense_weight_equals_the_grouped_conv():
    torch.manual_seed(0)
    weight = torch.randn(12, 2, 3, 3, dtype=F64, requires_grad=True)  # 4 groups of 2 in, 3 out channels
    x = torch.randn(2, 8, 6, 5, dtype=F64)
    dense = folds.dense_weight(weight, 4)
    assert dense.shape == (12, 8, 3, 3) and not dense.requires_grad
    with torch.no_grad():
        assert torch.allclose(F.conv2d(x, dense), F.conv2d(x, weight, groups=4))


def test_learned_token_queries_and_gate_equal_the_bridge_parts():
    """What the first Mobile→Former bridge computes from the learned tokens alone: the scaled queries, the gate."""
    torch.manual_seed(0)
    bridge = MobileToFormer(8, 32, dtype=F64).eval()
    for p in bridge.parameters():
        nn.init.normal_(p, 0., 0.5)
    tokens = torch.randn(3, 32, dtype=F64, requires_grad=True)
    queries, gate = folds.learned_token_queries(bridge, tokens), folds.learned_token_gate(bridge, tokens)
    with torch.no_grad():
        assert torch.allclose(queries, bridge.q(tokens) * bridge.scale)
        assert torch.allclose(gate, 2. * F.hardsigmoid(bridge.gate(tokens)))
    assert _detached((queries, gate))


def test_the_model_file_states_the_paper_without_speed_branches():
    source = (Path(__file__).parents[1] / 'timm_mobileformer' / 'mobileformer.py').read_text()
    forbidden = {
        'tracing / compiling / exporting branch': r'is_tracing|is_compiling|is_exporting',
        'memory-layout branch': r'torch\.channels_last|memory_format|is_contiguous',
        'device branch': r'device\.type\s*==',
        'private torch name': r'torch\._[a-z]|torch\.ops\b',
        'private timm name': r'timm\.\w+\._|from timm\.\w+\._',
        'mode flag': r'self\.fused\b',
        'custom autograd': r'autograd\.Function',
    }
    found = {what: re.findall(pattern, source) for what, pattern in forbidden.items()}
    assert not any(found.values()), found
    assert 'max(k1 * x, k2 * x)' in source
