"""The XNNPACK runtime form of Mobile-Former, `XnnpackMobileFormer(model, batch_size)`: the form ExecuTorch
programs are lowered from, written so that ExecuTorch's XNNPACK partitioner takes every op.

Each class mirrors the model's class of the same name (`XnnpackMobileToFormer` for `MobileToFormer`, ...) and is
built from the parameters of a plain eval model through the weight folds of `layers/folds.py`, like the ONNX
Runtime form: BatchNorms, attention scales and hard sigmoids folded; the first block's queries and gate of the
learned tokens precomputed; the token merge's bridge computing token 0 only. What XNNPACK needs differently is
here:

- only ops the partitioner delegates: no `expand` (constants are laid out for the fixed batch instead), no
  `select`/`squeeze` (slices and reshapes), no `scaled_dot_product_attention` or `layer_norm` (spelled out as
  `bmm`, last-axis `softmax`, `linear` and element-wise ops), every matrix product a 3-D `bmm`;
- the batch is fixed, as a phone app runs it, so every reshape is static;
- convs run in XNNPACK's NHWC layout; the bridges read and write the map as (channels, pixels) matrices, so
  each Mobile-Former block converts its map's layout twice (into the Former→Mobile bridge, and out of it for
  the next block's convs), and Mobile→Former reads the converted map of the block before;
- Former→Mobile's softmax over the few tokens is spelled out on (tokens, pixels) logits, their maximum a
  max pool over the tokens (XNNPACK's softmax runs on the last axis only, and a last axis of a few tokens is
  slow);
- a depthwise conv with a channel multiplier m is m plain depthwise convs, concatenated (XNNPACK runs the
  multiplier form as a grouped GEMM): output j C + c is the original channel c m + j, the order a channel
  shuffle with C groups gives, so the layers after it read that order (26m's shuffles there fold for free);
- a channel shuffle next to a grouped pointwise conv is folded into a dense conv (26m only);
- the dynamic ReLU is max(x k1, x k2): two multiplies and a maximum, which XNNPACK runs as element-wise ops;
  its slopes come from two linears (k1, k2) with their clamps fused;
- LayerNorm's eps is the variance linear's bias. The fewer the graph's nodes, the faster the lowering: its
  passes cost time per node;
- in int8 the LayerNorms stay in float (`FLOAT_IN_INT8`): quantized, their eight element-wise ops each bring their
  own quantize and dequantize nodes, about a fifth of the int8 graph, and gain no speed (they run on the few
  tokens).
"""
import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.folds import (
    conv_norm_weights,
    dense_weight,
    hard_sigmoid_weights,
    inverse_perm,
    learned_token_gate,
    learned_token_queries,
    linear_norm_weights,
    scaled_weights,
    shuffle_perm,
    take,
)

__all__ = [
    'FLOAT_IN_INT8', 'XnnpackMobileFormer', 'XnnpackConvNorm', 'XnnpackMultiplierDepthwise', 'XnnpackLayerNorm',
    'XnnpackDynamicReLU', 'XnnpackMobileToFormer', 'XnnpackFormer', 'XnnpackFormerToMobile', 'XnnpackLiteBottleneck',
    'XnnpackInvertedBottleneck', 'XnnpackDownsampleBottleneck', 'XnnpackMobileFormerBlock', 'XnnpackTokenMerge',
    'XnnpackMobileFormerHead',
]


def _const(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().contiguous().clone(), requires_grad=False)


def _shuffle(module: nn.Module, channels: int) -> Optional[torch.Tensor]:
    """The permutation of a ChannelShuffle module (None for an Identity)."""
    groups = getattr(module, 'groups', None)
    return None if groups is None else shuffle_perm(channels, groups)


def _first_token(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Token 0 of each sample of a (B M, d) token matrix: (B, d), the first d columns of each sample's tokens
    flattened."""
    return tokens.reshape(batch_size, -1)[:, :tokens.shape[-1]]


class XnnpackConvNorm(nn.Module):
    """ConvNorm: one conv with its BatchNorm folded in, then ReLU6 if any (a clamp XNNPACK fuses into the conv).
    `out_perm` / `in_perm` reorder its output / input channels (a dense conv then: a channel shuffle folded)."""

    def __init__(self, conv_norm: nn.Module, out_perm: Optional[torch.Tensor] = None,
                 in_perm: Optional[torch.Tensor] = None):
        super().__init__()
        conv = conv_norm.conv
        weight, bias = conv_norm_weights(conv_norm)
        groups = conv.groups
        if out_perm is not None or in_perm is not None:
            weight, groups = dense_weight(weight, groups), 1
        if out_perm is not None:
            weight, bias = take(weight, out_perm, 0), take(bias, out_perm, 0)
        if in_perm is not None:
            weight = take(weight, in_perm, 1)
        self.weight, self.bias = _const(weight), _const(bias)
        self.stride, self.padding, self.groups = conv.stride, conv.padding, groups
        self.relu6 = isinstance(conv_norm.bn.act, nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return x.clamp(0., 6.) if self.relu6 else x


class XnnpackMultiplierDepthwise(nn.Module):
    """A ConvNorm depthwise conv with a channel multiplier m (output c m + j reads input c) as m plain depthwise
    convs, concatenated: output j C + c is the original output `order[j C + c]` = c m + j."""

    def __init__(self, conv_norm: nn.Module):
        super().__init__()
        conv = conv_norm.conv
        channels, multiplier = conv.in_channels, conv.out_channels // conv.in_channels
        k = torch.arange(conv.out_channels)
        self.order = (k % channels) * multiplier + k // channels
        weight, bias = conv_norm_weights(conv_norm)
        weight, bias = weight[self.order].split(channels), bias[self.order].split(channels)
        self.weights = nn.ParameterList([_const(w) for w in weight])
        self.biases = nn.ParameterList([_const(b) for b in bias])
        self.stride, self.padding = conv.stride, conv.padding
        self.relu6 = isinstance(conv_norm.bn.act, nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.conv2d(x, w, b, self.stride, self.padding, 1, x.shape[1]) for w, b in zip(self.weights, self.biases)]
        if self.relu6:
            outs = [out.clamp(0., 6.) for out in outs]
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]


def _reorder_after(depthwise: XnnpackMultiplierDepthwise, shuffle: nn.Module) -> Optional[torch.Tensor]:
    """What the layers after a split multiplier conv read: its output is already in the order of a channel shuffle
    with C groups (26m's shuffle there: nothing to do); without that shuffle, the original order is `order`."""
    return None if getattr(shuffle, 'groups', None) is not None else depthwise.order


class XnnpackLayerNorm(nn.Module):
    """LayerNorm over the last axis of a (N, d) matrix, spelled out: the means as `linear`s by a 1/d row, eps the
    variance's bias."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        dim = norm.normalized_shape[0]
        self.mean = _const(torch.full((1, dim), 1. / dim))
        self.eps = _const(torch.full((1,), norm.eps))
        self.weight, self.bias = _const(norm.weight), _const(norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - F.linear(x, self.mean)
        return centred * torch.rsqrt(F.linear(centred * centred, self.mean, self.eps)) * self.weight + self.bias


# the modules an int8 program keeps in float (docs/deploy.md measures the choice)
FLOAT_IN_INT8 = (XnnpackLayerNorm,)


class XnnpackDynamicReLU(nn.Module):
    """DynamicReLU: max(x k1, x k2), the slopes from token 0; 2 * hard_sigmoid folded into fc2 and fc2 split in
    its k1 and k2 rows, so that k1 = clamp(fc2_k1(.), 0, 2) and k2 = clamp(fc2_k2(.) - 1, -1, 1), each a linear
    with its clamp fused. `perm` reorders the channels as the map around it is ordered."""

    def __init__(self, act: nn.Module, perm: Optional[torch.Tensor] = None):
        super().__init__()
        self.channels = act.channels
        self.fc1_weight, self.fc1_bias = _const(act.fc1.weight), _const(act.fc1.bias)
        weight, bias = hard_sigmoid_weights(act.fc2)
        (k1_weight, k2_weight), (k1_bias, k2_bias) = weight.split(self.channels), bias.split(self.channels)
        if perm is not None:
            k1_weight, k2_weight = take(k1_weight, perm, 0), take(k2_weight, perm, 0)
            k1_bias, k2_bias = take(k1_bias, perm, 0), take(k2_bias, perm, 0)
        self.k1_weight, self.k1_bias = _const(k1_weight), _const(k1_bias)
        self.k2_weight, self.k2_bias = _const(k2_weight), _const(k2_bias - 1.)

    def slopes(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k1, k2), each (B, C, 1, 1), from token 0 (B, d)."""
        hidden = F.relu(F.linear(token, self.fc1_weight, self.fc1_bias))
        k1 = F.linear(hidden, self.k1_weight, self.k1_bias).clamp(0., 2.)
        k2 = F.linear(hidden, self.k2_weight, self.k2_bias).clamp(-1., 1.)
        b, c = token.shape[0], self.channels
        return k1.reshape(b, c, 1, 1), k2.reshape(b, c, 1, 1)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        k1, k2 = self.slopes(token)
        return torch.maximum(x * k1, x * k2)


class XnnpackMobileToFormer(nn.Module):
    """MobileToFormer: the tokens attend over the pixels (softmax over pixels, the last axis), gated, projected,
    residual, LayerNorm. With `tokens` (the learned ones), q(tokens) and gate(tokens) are constants; with
    `first_only`, only token 0 is computed (the token merge)."""

    def __init__(self, bridge: nn.Module, num_tokens: int, batch_size: int, tokens: Optional[torch.Tensor] = None,
                 first_only: bool = False):
        super().__init__()
        self.heads, self.channels = bridge.num_heads, bridge.q.out_features
        self.num_tokens, self.batch_size = (1 if first_only else num_tokens), batch_size
        self.first_only = first_only
        self.constant = tokens is not None
        if self.constant:
            queries = learned_token_queries(bridge, tokens)  # (M, C)
            heads = queries.reshape(num_tokens, self.heads, -1).transpose(0, 1)  # (h, M, C / h)
            self.queries = _const(heads.repeat(batch_size, 1, 1))
            self.gate = _const(learned_token_gate(bridge, tokens).repeat(batch_size, 1))
        else:
            self.q_weight, self.q_bias = (_const(t) for t in scaled_weights(bridge.q, bridge.scale))
            self.gate_weight, self.gate_bias = (_const(t) for t in hard_sigmoid_weights(bridge.gate))
        self.proj_weight, self.proj_bias = _const(bridge.proj.weight), _const(bridge.proj.bias)
        self.norm = XnnpackLayerNorm(bridge.norm)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), tokens (B M, d) -> (B M, d), or (B, d) with first_only."""
        b, h, m, c = self.batch_size, self.heads, self.num_tokens, self.channels
        if self.first_only:
            tokens = _first_token(tokens, b)
        if self.constant:
            queries, gate = self.queries, self.gate
        else:
            queries = F.linear(tokens, self.q_weight, self.q_bias).reshape(b, m, h, c // h).transpose(1, 2)
            queries = queries.reshape(b * h, m, c // h)
            gate = F.linear(tokens, self.gate_weight, self.gate_bias).clamp(0., 2.)
        pixels = x.reshape(b * h, c // h, -1)  # (B h, C / h, H W)
        attn = torch.softmax(torch.bmm(queries, pixels), dim=-1)  # (B h, M, H W)
        out = torch.bmm(pixels, attn.transpose(1, 2))  # (B h, C / h, M)
        out = out.reshape(b, h, c // h, m).permute(0, 3, 1, 2).reshape(b * m, c)
        return self.norm(tokens + F.linear(out * gate, self.proj_weight, self.proj_bias))


class XnnpackFormer(nn.Module):
    """Former: post-norm attention over the tokens (keys and values are the tokens), then the FFN."""

    def __init__(self, former: nn.Module, num_tokens: int, batch_size: int):
        super().__init__()
        self.heads, self.num_tokens, self.batch_size = former.num_heads, num_tokens, batch_size
        self.q_weight, self.q_bias = (_const(t) for t in scaled_weights(former.q, former.scale))
        self.proj_weight, self.proj_bias = _const(former.proj.weight), _const(former.proj.bias)
        self.fc1_weight, self.fc1_bias = _const(former.fc1.weight), _const(former.fc1.bias)
        self.fc2_weight, self.fc2_bias = _const(former.fc2.weight), _const(former.fc2.bias)
        self.norm1, self.norm2 = XnnpackLayerNorm(former.norm1), XnnpackLayerNorm(former.norm2)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B M, d) -> (B h, M, d / h)."""
        b, m, h = self.batch_size, self.num_tokens, self.heads
        return t.reshape(b, m, h, -1).transpose(1, 2).reshape(b * h, m, -1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, m, h = self.batch_size, self.num_tokens, self.heads
        kv = self._heads(tokens)
        queries = self._heads(F.linear(tokens, self.q_weight, self.q_bias))
        attn = torch.softmax(torch.bmm(queries, kv.transpose(1, 2)), -1)
        out = torch.bmm(attn, kv).reshape(b, h, m, -1).transpose(1, 2).reshape(b * m, -1)
        tokens = self.norm1(tokens + F.linear(out, self.proj_weight, self.proj_bias))
        hidden = F.gelu(F.linear(tokens, self.fc1_weight, self.fc1_bias))
        return self.norm2(tokens + F.linear(hidden, self.fc2_weight, self.fc2_bias))


class XnnpackFormerToMobile(nn.Module):
    """FormerToMobile: every pixel reads the tokens (softmax over the tokens) and adds the readout; k and v from
    one linear."""

    def __init__(self, bridge: nn.Module, num_tokens: int, batch_size: int):
        super().__init__()
        self.heads, self.channels = bridge.num_heads, bridge.k.out_features
        self.num_tokens, self.batch_size = num_tokens, batch_size
        k_weight, k_bias = scaled_weights(bridge.k, bridge.scale)
        self.kv_weight = _const(torch.cat([k_weight, bridge.v.weight.detach()]))
        self.kv_bias = _const(torch.cat([k_bias, bridge.v.bias.detach()]))
        self.ones = _const(torch.ones(batch_size * self.heads, 1, num_tokens))  # sums over the tokens, as a bmm

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, h, m, c = self.batch_size, self.heads, self.num_tokens, self.channels
        kv = F.linear(tokens, self.kv_weight, self.kv_bias).reshape(b, m, 2 * h, c // h).transpose(1, 2)
        k, v = kv[:, :h].reshape(b * h, m, c // h), kv[:, h:].reshape(b * h, m, c // h)
        pixels = x.reshape(b * h, c // h, -1)  # (B h, C / h, H W)
        logits = torch.bmm(k, pixels)  # (B h, M, H W)
        top = F.max_pool2d(logits.reshape(b * h, 1, m, -1), (m, 1)).reshape(b * h, 1, -1)  # max over the tokens
        exp = torch.exp(logits - top)
        attn = exp / torch.bmm(self.ones, exp)  # softmax over the tokens
        return x + torch.bmm(v.transpose(1, 2), attn).reshape(x.shape)


class XnnpackLiteBottleneck(nn.Module):
    """LiteBottleneck: the multiplier depthwise conv split (its output already in the shuffled order of 26m),
    then the pointwise conv reading that order."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv_dw = XnnpackMultiplierDepthwise(block.conv_dw)
        order = _reorder_after(self.conv_dw, block.shuffle)
        self.conv_pw = XnnpackConvNorm(block.conv_pw, in_perm=order)
        self.has_skip = block.has_skip

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_pw(self.conv_dw(x))
        return (out + x if self.has_skip else out), tokens


class XnnpackInvertedBottleneck(nn.Module):
    """InvertedBottleneck: pw, dynamic ReLU, dw, dynamic ReLU, pw; 26m's shuffles folded into dense pw convs."""

    def __init__(self, mobile: nn.Module):
        super().__init__()
        hidden, out_chs = mobile.conv_pw.conv.out_channels, mobile.conv_pwl.conv.out_channels
        self.conv_pw = XnnpackConvNorm(mobile.conv_pw, out_perm=_shuffle(mobile.shuffle_pw, hidden))
        self.act1 = XnnpackDynamicReLU(mobile.act1)
        self.conv_dw = XnnpackConvNorm(mobile.conv_dw)
        self.act2 = XnnpackDynamicReLU(mobile.act2)
        self.conv_pwl = XnnpackConvNorm(mobile.conv_pwl, out_perm=_shuffle(mobile.shuffle_pwl, out_chs))
        self.has_skip = mobile.has_skip

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.act2(self.conv_dw(self.act1(self.conv_pw(x), token)), token))
        return out + x if self.has_skip else out


class XnnpackDownsampleBottleneck(nn.Module):
    """DownsampleBottleneck: both multiplier depthwise convs split; the layers after each read its order."""

    def __init__(self, mobile: nn.Module):
        super().__init__()
        self.conv_dw1 = XnnpackMultiplierDepthwise(mobile.conv_dw1)
        order1 = _reorder_after(self.conv_dw1, mobile.shuffle_dw1)
        self.act1 = XnnpackDynamicReLU(mobile.act1, order1)
        self.conv_pw1 = XnnpackConvNorm(mobile.conv_pw1, in_perm=order1)
        self.conv_dw2 = XnnpackMultiplierDepthwise(mobile.conv_dw2)
        order2 = _reorder_after(self.conv_dw2, mobile.shuffle_dw2)
        self.act2 = XnnpackDynamicReLU(mobile.act2, order2)
        self.conv_pw2 = XnnpackConvNorm(mobile.conv_pw2, in_perm=order2)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_pw1(self.act1(self.conv_dw1(x), token))
        return self.conv_pw2(self.act2(self.conv_dw2(shortcut), token)) + shortcut


class XnnpackMobileFormerBlock(nn.Module):
    """MobileFormerBlock: tokens' = Former(MobileToFormer(x, tokens)); the Mobile sub-block with token 0 of
    tokens'; FormerToMobile reads tokens' into the Mobile output."""

    def __init__(self, block: nn.Module, num_tokens: int, batch_size: int, tokens: Optional[torch.Tensor] = None):
        super().__init__()
        self.batch_size = batch_size
        self.mobile_to_former = XnnpackMobileToFormer(block.mobile_to_former, num_tokens, batch_size, tokens)
        self.former = XnnpackFormer(block.former, num_tokens, batch_size)
        down = hasattr(block.mobile, 'conv_dw1')
        self.mobile = (XnnpackDownsampleBottleneck if down else XnnpackInvertedBottleneck)(block.mobile)
        self.former_to_mobile = XnnpackFormerToMobile(block.former_to_mobile, num_tokens, batch_size)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.former(self.mobile_to_former(x, tokens))
        x = self.mobile(x, _first_token(tokens, self.batch_size))
        return self.former_to_mobile(x, tokens), tokens


class XnnpackTokenMerge(nn.Module):
    """TokenMerge for the head: the bridge computes token 0 only, and the 1x1 conv's map is returned unmerged
    (the head pools it and concatenates token 0 after pooling)."""

    def __init__(self, merge: nn.Module, num_tokens: int, batch_size: int):
        super().__init__()
        self.bridge = XnnpackMobileToFormer(merge.bridge, num_tokens, batch_size, first_only=True)
        in_perm = _shuffle(merge.shuffle, merge.conv.conv.in_channels)
        self.conv = XnnpackConvNorm(merge.conv, in_perm=None if in_perm is None else inverse_perm(in_perm))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.bridge(x, tokens)


class XnnpackMobileFormerHead(nn.Module):
    """MobileFormerHead: average pool, h-swish, concat token 0, FC with its BatchNorm1d folded, h-swish, FC."""

    def __init__(self, head: nn.Module):
        super().__init__()
        pool = getattr(head.global_pool, 'pool_type', 'avg')
        if pool != 'avg':
            raise ValueError(f'the XNNPACK form has the avg pool only, not {pool!r}')
        fc, norm = head.pre_logits.fc, head.pre_logits.norm
        weight, bias = linear_norm_weights(fc, norm) if isinstance(norm, nn.BatchNorm1d) else (fc.weight, fc.bias)
        self.fc1_weight, self.fc1_bias = _const(weight), _const(bias)
        self.fc_weight, self.fc_bias = _const(head.fc.weight), _const(head.fc.bias)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        local = F.hardswish(x.mean((2, 3), keepdim=True).flatten(1))
        features = F.hardswish(F.linear(torch.cat([local, token], 1), self.fc1_weight, self.fc1_bias))
        return F.linear(features, self.fc_weight, self.fc_bias)


class XnnpackMobileFormer(nn.Module):
    """The XNNPACK runtime form of an eval Mobile-Former at a fixed batch size: (B, 3, H, W) -> (B, classes)."""

    def __init__(self, model: nn.Module, batch_size: int = 1):
        super().__init__()
        model = copy.deepcopy(model).eval()
        if not isinstance(model.head.fc, nn.Linear):
            raise ValueError('the XNNPACK form needs a classifier: build the model with num_classes > 0')
        self.batch_size = batch_size
        tokens = model.tokens.detach()
        num_tokens = len(tokens)
        self.stem = XnnpackConvNorm(model.stem)
        self.tokens = _const(tokens.repeat(batch_size, 1))  # (B M, d)
        blocks: list[nn.Module] = []
        learned = tokens  # the first Mobile-Former block reads the learned tokens
        for block in model.blocks:
            if hasattr(block, 'mobile_to_former'):
                blocks.append(XnnpackMobileFormerBlock(block, num_tokens, batch_size, learned))
                learned = None
            else:
                blocks.append(XnnpackLiteBottleneck(block))
        self.blocks = nn.ModuleList(blocks)
        self.merge = XnnpackTokenMerge(model.merge, num_tokens, batch_size)
        self.head = XnnpackMobileFormerHead(model.head)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, tokens = self.stem(x), self.tokens
        for block in self.blocks:
            x, tokens = block(x, tokens)
        return self.head(*self.merge(x, tokens))
