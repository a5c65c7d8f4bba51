"""Inference forms of Mobile-Former's modules: what `fuse()` (and timm's `reparameterize_model`) puts in place
of each plain module, computing the same eval-mode output with less work.

Every BatchNorm folds into the conv or linear ahead of it, the attention scales into the query and key
projections, the hard sigmoids' affine parts into the layers that feed them: the weights come from `folds.py`,
which the runtime forms share. The builders read the plain modules by their attribute names, so this file does
not import the model file.
`cpu_layouts` then stores weights in the layouts eager CPU kernels run fastest on.
"""
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from .folds import Weights, conv_norm_weights, hard_sigmoid_weights, linear_norm_weights, scaled_weights

__all__ = [
    'FoldedConv', 'FusedDynamicReLU', 'FusedMobileToFormer', 'FusedFormerToMobile', 'fold_conv_norm',
    'fold_dynamic_relu', 'fold_mobile_to_former', 'fold_former_to_mobile', 'fold_head_norm', 'cpu_layouts',
]


class FoldedConv(nn.Conv2d):
    """A conv with its BatchNorm folded into weight and bias, then ReLU6 if any.

    Two CPU kernel choices, on channels_last input in eager PyTorch (`ops.use_native_layout_kernels`): a 1x1
    ungrouped conv on a single image runs as a matrix product over the pixels, which beats both of torch's 1x1
    conv kernels at batch 1; a depthwise conv with a channel multiplier on a map of at most 28x28 pixels first
    repeats each input channel (a copy that stays channels_last) and then runs as a plain depthwise conv,
    which oneDNN does far faster than the multiplier form.
    """
    max_repeat_pixels = 28 * 28

    def __init__(self, *args: Any, relu6: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.relu6 = relu6
        self.pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1
        self.multiplier = self.out_channels // self.in_channels if self.groups == self.in_channels else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or not ops.use_native_layout_kernels(x):
            x = super().forward(x)
        elif self.pointwise and x.shape[0] == 1:
            x = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        elif self.multiplier > 1 and x.shape[2] * x.shape[3] <= self.max_repeat_pixels:
            b, c, h, w = x.shape
            x = x.permute(0, 2, 3, 1).unsqueeze(-1).expand(b, h, w, c, self.multiplier)
            x = x.reshape(b, h, w, self.out_channels).permute(0, 3, 1, 2)
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.out_channels)
        else:
            x = super().forward(x)
        return F.hardtanh_(x, 0., 6.) if self.relu6 else x

    def extra_repr(self) -> str:
        return super().extra_repr() + (', relu6=True' if self.relu6 else '')


@torch.no_grad()
def fold_conv_norm(conv_norm: nn.Module) -> FoldedConv:
    """timm's ConvNormAct (bias-free conv, BatchNorm, ReLU6 or no activation) as one FoldedConv."""
    conv, act = conv_norm.conv, conv_norm.bn.act
    assert isinstance(act, (nn.Identity, nn.ReLU6)), f'no inference form for {type(act).__name__}'
    folded = FoldedConv(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, relu6=isinstance(act, nn.ReLU6), device=conv.weight.device, dtype=conv.weight.dtype,
    )
    weight, bias = conv_norm_weights(conv_norm)
    folded.weight.copy_(weight)
    folded.bias.copy_(bias)
    return folded.train(conv_norm.training)


@torch.no_grad()
def _linear(like: nn.Linear, weights: Weights) -> nn.Linear:
    """A linear of `like`'s shape, device and dtype holding the folded `weights`."""
    linear = nn.Linear(like.in_features, like.out_features, device=like.weight.device, dtype=like.weight.dtype)
    linear.weight.copy_(weights[0])
    linear.bias.copy_(weights[1])
    return linear


class FusedDynamicReLU(nn.Module):
    """DynamicReLU with the hard sigmoid's affine part and the factor 2 folded into fc2: (k1, k2 + 1) is
    clamp(fc2(relu(fc1(token))), 0, 2) directly."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, channels: int):
        super().__init__()
        self.channels = channels
        self.fc1 = fc1
        self.fc2 = fc2

    def slopes(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.fc2(F.relu(self.fc1(token))).clamp(0., 2.)
        k1, k2 = k.reshape(k.shape[0], 2, self.channels, 1, 1).unbind(1)
        return k1, k2 - 1.

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        k1, k2 = self.slopes(token)
        return ops.dynamic_relu(x, k1, k2)


def fold_dynamic_relu(act: nn.Module) -> FusedDynamicReLU:
    return FusedDynamicReLU(act.fc1, _linear(act.fc2, hard_sigmoid_weights(act.fc2)), act.channels).train(act.training)


class FusedMobileToFormer(nn.Module):
    """MobileToFormer with the attention scale folded into q and the gate's 2 * hard_sigmoid into gate."""

    def __init__(self, q: nn.Linear, gate: nn.Linear, proj: nn.Linear, norm: nn.LayerNorm, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = q
        self.gate = gate
        self.proj = proj
        self.norm = norm

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of each token over the pixels of x: (B, heads, M, H * W), rows sum to 1."""
        q = ops.split_heads(self.q(tokens), self.num_heads)
        return torch.softmax(q @ ops.pixel_heads(x, self.num_heads), dim=-1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = ops.merge_heads(ops.tokens_read_pixels(ops.split_heads(self.q(tokens), self.num_heads), x, 1.))
        out = out * self.gate(tokens).clamp(0., 2.)
        return self.norm(tokens + self.proj(out))


def fold_mobile_to_former(bridge: nn.Module) -> FusedMobileToFormer:
    fused = FusedMobileToFormer(_linear(bridge.q, scaled_weights(bridge.q, bridge.scale)),
                                _linear(bridge.gate, hard_sigmoid_weights(bridge.gate)), bridge.proj, bridge.norm,
                                bridge.num_heads)
    return fused.train(bridge.training)


class FusedFormerToMobile(nn.Module):
    """FormerToMobile with the attention scale folded into k."""

    def __init__(self, k: nn.Linear, v: nn.Linear, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.k = k
        self.v = v

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of each pixel over the tokens, laid out (B, heads, M, H * W); columns sum to 1."""
        k = ops.split_heads(self.k(tokens), self.num_heads)
        return torch.softmax(k @ ops.pixel_heads(x, self.num_heads), dim=-2)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        k = ops.split_heads(self.k(tokens), self.num_heads)
        v = ops.split_heads(self.v(tokens), self.num_heads)
        return ops.pixels_add_tokens(x, k, v, 1.)


def fold_former_to_mobile(bridge: nn.Module) -> FusedFormerToMobile:
    k = _linear(bridge.k, scaled_weights(bridge.k, bridge.scale))
    return FusedFormerToMobile(k, bridge.v, bridge.num_heads).train(bridge.training)


def fold_head_norm(fc: nn.Linear, norm: nn.BatchNorm1d) -> nn.Linear:
    """A linear whose output is norm(fc(x)) in eval mode."""
    return _linear(fc, linear_norm_weights(fc, norm))


def cpu_layouts(model: nn.Module, token_parts: Iterable[nn.Module], channels_last: bool = True) -> nn.Module:
    """Store weights where eager CPU kernels read them fastest; values are unchanged.

    The linears in `token_parts` see a handful of rows per image: a gemm on (in, out)-major weights runs
    them faster than on the usual (out, in) layout. With `channels_last` the conv weights are
    stored channels_last, so the network runs channels_last (the faster layout for CPU convolutions) even
    on NCHW input.
    """
    for linear in (m for part in token_parts for m in part.modules() if isinstance(m, nn.Linear)):
        weight = linear.weight
        linear.weight = nn.Parameter(weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
