"""The ONNX Runtime runtime form of Mobile-Former, `OrtMobileFormer(model)`: the form ONNX files are exported from.

Each class mirrors the model's class of the same name (`OrtMobileToFormer` for `MobileToFormer`, ...) and is
built from the parameters of a plain eval model, read by attribute name through the weight folds of
`layers/folds.py` (no fused form, no forward code of the model is used), so that the exported graph holds only
the nodes the math needs:

- every BatchNorm folded into its conv or linear, the hard sigmoids' affine parts and the attention scales
  folded into the linears ahead of them;
- channel shuffles folded away: a grouped pointwise conv next to a shuffle becomes a dense 1x1 conv with its
  rows or columns permuted (and the dynamic ReLU slopes between them permuted alike);
- dynamic ReLU as Max(Mul(x, k1), Mul(x, k2)), no Where, over channels padded to whole blocks of 16 (ORT
  would pad them around each one); `ort_graph.py` moves exactly this pattern into ORT's blocked layout;
- the two dynamic ReLUs of a Mobile sub-block get their slopes from one fc1 Gemm (side by side) and, where
  that reads few extra zeros, one block-diagonal fc2 Gemm (else one Gemm per fc2);
- token-only work precomputed while the tokens are still input-independent (the first Mobile-Former block's
  q(tokens) and gate(tokens)), and the learned tokens broadcast instead of expanded per batch;
- the token merge's bridge computes token 0 only (the head reads nothing else), and the head pools the 1x1
  conv's map directly (no broadcast token map, no concat of maps);
- tokens travel as one (batch x tokens, dim) matrix, so every token linear is one Gemm (no reshapes around
  it); only attention splits them into heads;
- every depthwise conv with a channel multiplier is split into plain depthwise convs over whole blocks of 16
  channels (`SplitDepthwise`), concatenated, so that ORT keeps it in its blocked layout (it runs a
  multiplier conv only in NCHW, between reorders); where the stem's channels leave room in their block,
  the room holds copies of them when that saves the stage-1 block a conv (52m, 26m);
- the Former's attention is `scaled_dot_product_attention`: one `Attention` node from ONNX opset 23;
- Former→Mobile's softmax over the tokens is spelled out (ORT's `Softmax` on an inner axis is slow).
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
    'OrtMobileFormer', 'OrtConvNorm', 'SplitDepthwise', 'OrtDynamicReLUSlopes', 'dynamic_relu', 'OrtMobileToFormer',
    'OrtFormer', 'OrtFormerToMobile', 'OrtLiteBottleneck', 'OrtInvertedBottleneck', 'OrtDownsampleBottleneck',
    'OrtMobileFormerBlock', 'OrtTokenMerge', 'OrtMobileFormerHead',
]

BLOCK = 16  # channels per block of ORT's NCHWc layout: 16 with AVX-512, 8 with AVX2; 16 is whole blocks on both

Slopes = tuple[torch.Tensor, torch.Tensor]


def _whole_blocks(channels: int) -> int:
    return -(-channels // BLOCK) * BLOCK


def _then(index: torch.Tensor, perm: Optional[torch.Tensor]) -> torch.Tensor:
    """perm[index], keeping -1 (padding)."""
    if perm is None:
        return index
    return torch.where(index >= 0, perm[index.clamp(min=0)], index)


def _padding(channels: int, total: int) -> torch.Tensor:
    """The index map of `channels` channels followed by zero channels up to `total`."""
    return torch.cat([torch.arange(channels), torch.full((total - channels,), -1)])


def _copies(channels: int, total: int) -> torch.Tensor:
    """The index map of `channels` channels followed by copies of them (cyclically) up to `total`."""
    return torch.cat([torch.arange(channels), torch.arange(total - channels) % channels])


def _unshuffle(shuffle: nn.Module, channels: int) -> Optional[torch.Tensor]:
    """The index map that folds a channel shuffle (of `channels`) into the conv reading its output; None for
    no shuffle (an Identity)."""
    if isinstance(shuffle, nn.Identity):
        return None
    return inverse_perm(shuffle_perm(channels, shuffle.groups))


def _const(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().contiguous().clone(), requires_grad=False)


def _split_heads(t: torch.Tensor, tokens: int, heads: int) -> torch.Tensor:
    """(B M, C) -> (B, heads, M, C / heads)."""
    return t.reshape(-1, tokens, heads, t.shape[-1] // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, M, C / heads) -> (B M, C)."""
    return t.transpose(1, 2).reshape(-1, t.shape[1] * t.shape[3])


class OrtConvNorm(nn.Module):
    """ConvNorm: a conv with its BatchNorm folded in, optional ReLU6 (Clip, which ORT fuses into the Conv).

    `dense` (or a permutation) makes a grouped conv dense; `out_perm` / `in_perm` reorder its output / input
    channels (-1: a zero channel); `padded_to` pads a depthwise conv with zero channels."""

    def __init__(self, conv_norm: nn.Module, dense: bool = False, out_perm: Optional[torch.Tensor] = None,
                 in_perm: Optional[torch.Tensor] = None, padded_to: Optional[int] = None):
        super().__init__()
        conv = conv_norm.conv
        weight, bias = conv_norm_weights(conv_norm)
        groups = conv.groups
        if padded_to is not None:  # a depthwise conv over its channels and zero channels up to padded_to
            assert groups == conv.in_channels == conv.out_channels, 'padded_to is for depthwise convs'
            index = _padding(conv.out_channels, padded_to)
            weight, bias, groups = take(weight, index, 0), take(bias, index, 0), padded_to
        if dense or out_perm is not None or in_perm is not None:
            weight, groups = dense_weight(weight, groups), 1
        if out_perm is not None:
            weight, bias = take(weight, out_perm, 0), take(bias, out_perm, 0)
        if in_perm is not None:
            weight = take(weight, in_perm, 1)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
        self.stride, self.padding, self.groups = conv.stride, conv.padding, groups
        act = getattr(conv_norm.bn, 'act', nn.Identity())
        assert isinstance(act, (nn.Identity, nn.ReLU6)), type(act)
        self.relu6 = isinstance(act, nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return x.clamp(0., 6.) if self.relu6 else x


def _pack(source: torch.Tensor, channels: int, multiplier: int) -> list[torch.Tensor]:
    """Output channels of a multiplier depthwise conv (c m + j reads input channel c) placed on parts of
    len(source) slots each, slot s reading input channel source[s] (-1: none); where a channel has several
    slots, its outputs share a part. Per part, the original output channel at each slot (-1: zero)."""
    slots = [(source == c).nonzero().squeeze(1) for c in range(channels)]
    rows = torch.full((max(-(-multiplier // len(s)) for s in slots), len(source)), -1)
    for c, s in enumerate(slots):
        for j in range(multiplier):
            rows[j // len(s), s[j % len(s)]] = c * multiplier + j
    return list(rows)


class SplitDepthwise(nn.Module):
    """A depthwise ConvNorm with a channel multiplier m (out channel c m + j reads channel c) as plain depthwise
    convs over whole blocks of channels, concatenated: ORT runs neither a multiplier conv nor a concat of
    partial blocks in its blocked layout, and reorders around each. The input comes in whole blocks, its
    slot s holding channel `source[s]` (default: the channels, then zeros); output channel i is channel
    `order[i]` of the original conv, -1 for padding (zero). An input whose spare slots hold copies of
    channels needs fewer convs: each copy serves one more output of its channel per conv."""

    def __init__(self, conv_norm: nn.Module, source: Optional[torch.Tensor] = None):
        super().__init__()
        conv = OrtConvNorm(conv_norm)
        channels = conv_norm.conv.in_channels
        padded = _whole_blocks(channels)
        self.stride, self.padding, self.groups, self.relu6 = conv.stride, conv.padding, padded, conv.relu6
        rows = _pack(_padding(channels, padded) if source is None else source, channels,
                     conv_norm.conv.out_channels // channels)
        self.order = torch.cat(rows)
        self.weights = nn.ParameterList([_const(take(conv.weight, r, 0)) for r in rows])
        self.biases = nn.ParameterList([_const(take(conv.bias, r, 0)) for r in rows])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.conv2d(x, w, b, self.stride, self.padding, 1, self.groups) for w, b in zip(self.weights, self.biases)]
        return torch.cat([out.clamp(0., 6.) for out in outs] if self.relu6 else outs, 1)


class OrtDynamicReLUSlopes(nn.Module):
    """The slopes of a Mobile sub-block's two DynamicReLUs from token 0: one Gemm for their fc1s, then their fc2s.

    2 * hard_sigmoid(z) = clamp(z / 3 + 1, 0, 2) is folded into fc2; k1 = that, k2 = that - 1 for each ReLU.
    `perms` reorder a ReLU's channels (where a channel shuffle was folded away around it; -1: a padding
    channel). Where the zeros of a block-diagonal fc2 pair are few (`ONE_FC2_ZEROS` bytes at most), both fc2s
    are one Gemm over it, and one Clip, Add and Split serve both ReLUs (`ort_graph` then splits the slopes
    once for both sites). Elsewhere each fc2 is its own Gemm: at batch 1 a Gemm on one token costs what its
    weights take to read, and the zeros of a large pair would double them (docs/deploy.md has the timings).
    """

    # bytes of zeros: reading them costs less than the Clip, Add and Split that one Gemm saves
    ONE_FC2_ZEROS = 128 * 1024

    def __init__(self, acts: list[nn.Module], perms: list[Optional[torch.Tensor]]):
        super().__init__()
        self.w1 = _const(torch.cat([a.fc1.weight for a in acts]))
        self.b1 = _const(torch.cat([a.fc1.bias for a in acts]))
        self.hidden = [a.fc1.out_features for a in acts]
        weights, biases, shifts = [], [], []
        for a, perm in zip(acts, perms):
            w2, b2 = hard_sigmoid_weights(a.fc2)
            if perm is not None:  # both halves (k1 rows, k2 rows) reordered alike
                idx = torch.cat([perm, torch.where(perm >= 0, perm + a.channels, perm)])
                w2, b2 = take(w2, idx, 0), take(b2, idx, 0)
            weights.append(w2)
            biases.append(b2)
            c = w2.shape[0] // 2
            shifts.append(torch.cat([torch.zeros(c), -torch.ones(c)]))  # k2 = clamp(.) - 1
        self.channels = [w.shape[0] // 2 for w in weights]
        rows, cols = sum(w.shape[0] for w in weights), sum(w.shape[1] for w in weights)
        zeros = (rows * cols - sum(w.numel() for w in weights)) * weights[0].element_size()
        self.one_fc2 = zeros <= self.ONE_FC2_ZEROS
        if self.one_fc2:
            weights, biases, shifts = [torch.block_diag(*weights)], [torch.cat(biases)], [torch.cat(shifts)]
        self.w2 = nn.ParameterList([_const(w) for w in weights])
        self.b2 = nn.ParameterList([_const(b) for b in biases])
        self.shift = nn.ParameterList([_const(s) for s in shifts])

    def forward(self, token: torch.Tensor) -> list[Slopes]:
        hidden = F.relu(F.linear(token, self.w1, self.b1))
        if self.one_fc2:
            k = F.linear(hidden, self.w2[0], self.b2[0]).clamp(0., 2.) + self.shift[0]
            halves = k.split([c for c in self.channels for _ in range(2)], dim=1)
        else:
            halves = [half for h, w2, b2, shift, c in zip(hidden.split(self.hidden, dim=1), self.w2, self.b2,
                                                           self.shift, self.channels)
                      for half in (F.linear(h, w2, b2).clamp(0., 2.) + shift).split([c, c], dim=1)]
        return [(k1.reshape(-1, c, 1, 1), k2.reshape(-1, c, 1, 1))
                for k1, k2, c in zip(halves[::2], halves[1::2], self.channels)]


def dynamic_relu(x: torch.Tensor, k: Slopes) -> torch.Tensor:
    """max(k1 x, k2 x): Max of two Muls, the pattern `ort_graph.rewrite_dynamic_relus` matches; in ONNX Runtime it
    runs faster than the relu and prelu forms of the same function (docs/deploy.md)."""
    return torch.maximum(x * k[0], x * k[1])


class OrtMobileToFormer(nn.Module):
    """MobileToFormer: tokens read the map, softmax over pixels, gated, projected, residual, LayerNorm.

    With `tokens` (the learned ones), q(tokens) and gate(tokens) are constants; with `first_only`, only token 0
    is computed.
    """

    def __init__(self, bridge: nn.Module, num_tokens: int, tokens: Optional[torch.Tensor] = None,
                 first_only: bool = False):
        super().__init__()
        self.heads = bridge.num_heads
        c = bridge.q.out_features
        self.c = c
        self.num_tokens = num_tokens
        self.const = tokens is not None
        self.first_only = first_only
        if self.const:
            self.q_const = _const(_split_heads(learned_token_queries(bridge, tokens), num_tokens, self.heads))
            self.gate_const = _const(learned_token_gate(bridge, tokens))
        else:
            wq, bq = scaled_weights(bridge.q, bridge.scale)
            wg, bg = hard_sigmoid_weights(bridge.gate)
            self.wq, self.bq = _const(wq), _const(bq)
            self.wg, self.bg = _const(wg), _const(bg)
        self.wp, self.bp = _const(bridge.proj.weight), _const(bridge.proj.bias)
        self.norm = nn.LayerNorm(bridge.norm.normalized_shape, eps=bridge.norm.eps)
        self.norm.load_state_dict(bridge.norm.state_dict())

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W); tokens (B M, d), or the learned (1, M, d) when constant; returns (B M, d), or (B, d)
        with first_only."""
        h, c, m = self.heads, self.c, self.num_tokens
        if self.first_only:
            tokens, m = tokens[::m], 1  # token 0 of each sample: one strided Slice
        if self.const:
            q, gate = self.q_const, self.gate_const
        else:
            q = _split_heads(F.linear(tokens, self.wq, self.bq), m, h)
            gate = F.linear(tokens, self.wg, self.bg).clamp(0., 2.)
        pixels = x.flatten(2).unflatten(1, (h, c // h))  # (B, h, c, HW)
        attn = torch.softmax(q @ pixels, dim=-1)  # (B, h, M, HW)
        out = _merge_heads(attn @ pixels.transpose(-1, -2))  # (B M, c)
        if self.const:  # the learned tokens, broadcast over the batch
            out = F.linear(out.reshape(-1, m, c) * gate, self.wp, self.bp)
            return self.norm((tokens + out).reshape(-1, tokens.shape[-1]))
        return self.norm(tokens + F.linear(out * gate, self.wp, self.bp))


class OrtFormer(nn.Module):
    """Former: attention of the tokens over themselves (scale folded into q), projection, post-norms, FFN."""

    def __init__(self, former: nn.Module, num_tokens: int):
        super().__init__()
        self.heads, self.num_tokens = former.num_heads, num_tokens
        wq, bq = scaled_weights(former.q, former.scale)
        self.wq, self.bq = _const(wq), _const(bq)
        self.wp, self.bp = _const(former.proj.weight), _const(former.proj.bias)
        self.norm1, self.norm2 = former.norm1, former.norm2
        self.fc1, self.fc2 = former.fc1, former.fc2

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B M, d) -> (B M, d)."""
        h, m = self.heads, self.num_tokens
        q = _split_heads(F.linear(tokens, self.wq, self.bq), m, h)
        kv = _split_heads(tokens, m, h)
        out = _merge_heads(F.scaled_dot_product_attention(q, kv, kv, scale=1.))  # the scale is folded into q
        tokens = self.norm1(tokens + F.linear(out, self.wp, self.bp))
        return self.norm2(tokens + self.fc2(F.gelu(self.fc1(tokens))))


def softmax_over_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim -2 (the few tokens), spelled out: ONNX Runtime runs Softmax on an inner axis as
    transposes around a last-axis softmax, several times slower (docs/deploy.md)."""
    e = torch.exp(logits - logits.amax(-2, keepdim=True))
    return e / e.sum(-2, keepdim=True)


class OrtFormerToMobile(nn.Module):
    """FormerToMobile: every pixel reads the tokens (softmax over tokens) and adds the readout; k (its scale
    folded in) and v in one Gemm."""

    def __init__(self, bridge: nn.Module, num_tokens: int):
        super().__init__()
        self.heads, self.num_tokens = bridge.num_heads, num_tokens
        wk, bk = scaled_weights(bridge.k, bridge.scale)
        self.c = bridge.k.out_features
        self.wkv = _const(torch.cat([wk, bridge.v.weight.detach()]))
        self.bkv = _const(torch.cat([bk, bridge.v.bias.detach()]))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h, c = self.heads, self.c
        kv = _split_heads(F.linear(tokens, self.wkv, self.bkv), self.num_tokens, 2 * h)  # (B, 2h, M, c/h)
        k, v = kv[:, :h], kv[:, h:]
        pixels = x.flatten(2).unflatten(1, (h, c // h))  # (B, h, c/h, HW)
        attn = softmax_over_tokens(k @ pixels)  # (B, h, M, HW)
        out = pixels + v.transpose(-1, -2) @ attn
        return out.reshape(x.shape)


class OrtLiteBottleneck(nn.Module):
    """LiteBottleneck, the stage-1 block. Its multiplier depthwise conv is split (`SplitDepthwise`): the input
    comes padded to whole blocks (slot s holding stem channel `source[s]`); with a skip, the output is padded
    alike."""

    def __init__(self, block: nn.Module, source: Optional[torch.Tensor] = None):
        super().__init__()
        in_perm = _unshuffle(block.shuffle, block.conv_dw.conv.out_channels)
        self.conv_dw = SplitDepthwise(block.conv_dw, source)
        self.has_skip = block.has_skip
        out_chs = block.conv_pw.conv.out_channels
        padded_out = self.has_skip and _whole_blocks(out_chs) != out_chs
        self.conv_pw = OrtConvNorm(block.conv_pw, in_perm=_then(self.conv_dw.order, in_perm),
                                   out_perm=_padding(out_chs, _whole_blocks(out_chs)) if padded_out else None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_pw(self.conv_dw(x))
        return (out + x if self.has_skip else out), tokens


class OrtInvertedBottleneck(nn.Module):
    """InvertedBottleneck: pw → dynamic ReLU → dw → dynamic ReLU → pw, shuffles folded into the pointwise
    convs, the expanded channels padded to whole blocks here (not by ORT around each dynamic ReLU)."""

    def __init__(self, mobile: nn.Module):
        super().__init__()
        self.in_chs = mobile.conv_pw.conv.in_channels
        g1 = getattr(mobile.shuffle_pw, 'groups', None)
        g2 = getattr(mobile.shuffle_pwl, 'groups', None)
        hidden = mobile.conv_pw.conv.out_channels
        perm1 = None if g1 is None else shuffle_perm(hidden, g1)
        pad = _padding(hidden, _whole_blocks(hidden)) if _whole_blocks(hidden) != hidden else None
        self.slopes = OrtDynamicReLUSlopes([mobile.act1, mobile.act2], [pad, pad])
        self.conv_pw = OrtConvNorm(mobile.conv_pw, out_perm=perm1 if pad is None else _then(pad, perm1))
        self.conv_dw = OrtConvNorm(mobile.conv_dw, padded_to=None if pad is None else len(pad))
        self.conv_pwl = OrtConvNorm(mobile.conv_pwl, in_perm=pad, out_perm=None if g2 is None else
                                    shuffle_perm(mobile.conv_pwl.conv.out_channels, g2))
        self.has_skip = mobile.has_skip

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        act1, act2 = self.slopes(token)
        out = self.conv_pwl(dynamic_relu(self.conv_dw(dynamic_relu(self.conv_pw(x), act1)), act2))
        return out + x if self.has_skip else out


class OrtDownsampleBottleneck(nn.Module):
    """DownsampleBottleneck: both multiplier depthwise convs split (`SplitDepthwise`); the input is padded to
    whole blocks (unless it comes padded from the stage-1 block), and so is the inner residual."""

    def __init__(self, mobile: nn.Module):
        super().__init__()
        p1 = _unshuffle(mobile.shuffle_dw1, mobile.conv_dw1.conv.out_channels)
        p2 = _unshuffle(mobile.shuffle_dw2, mobile.conv_dw2.conv.out_channels)
        self.in_chs, self.out_chs = mobile.conv_dw1.conv.in_channels, mobile.conv_pw1.conv.out_channels
        out_pad = _padding(self.out_chs, _whole_blocks(self.out_chs))
        self.conv_dw1 = SplitDepthwise(mobile.conv_dw1)
        self.conv_pw1 = OrtConvNorm(mobile.conv_pw1, in_perm=_then(self.conv_dw1.order, p1), out_perm=out_pad)
        self.conv_dw2 = SplitDepthwise(mobile.conv_dw2)
        self.conv_pw2 = OrtConvNorm(mobile.conv_pw2, in_perm=_then(self.conv_dw2.order, p2), out_perm=out_pad)
        self.slopes = OrtDynamicReLUSlopes([mobile.act1, mobile.act2], [_then(self.conv_dw1.order, p1),
                                                                        _then(self.conv_dw2.order, p2)])

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        act1, act2 = self.slopes(token)
        if x.shape[1] != _whole_blocks(self.in_chs):
            x = F.pad(x, (0, 0, 0, 0, 0, _whole_blocks(self.in_chs) - self.in_chs))
        shortcut = self.conv_pw1(dynamic_relu(self.conv_dw1(x), act1))
        out = self.conv_pw2(dynamic_relu(self.conv_dw2(shortcut), act2)) + shortcut
        return out[:, :self.out_chs] if out.shape[1] != self.out_chs else out


class OrtMobileFormerBlock(nn.Module):
    """MobileFormerBlock: Mobile→Former, Former, the Mobile sub-block driven by token 0, Former→Mobile. The
    bridge reads the real channels of an input that comes padded."""

    def __init__(self, block: nn.Module, num_tokens: int, tokens: Optional[torch.Tensor]):
        super().__init__()
        self.num_tokens = num_tokens
        self.mobile_to_former = OrtMobileToFormer(block.mobile_to_former, num_tokens, tokens)
        self.former = OrtFormer(block.former, num_tokens)
        down = hasattr(block.mobile, 'conv_dw1')
        self.mobile = OrtDownsampleBottleneck(block.mobile) if down else OrtInvertedBottleneck(block.mobile)
        self.former_to_mobile = OrtFormerToMobile(block.former_to_mobile, num_tokens)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        in_chs = self.mobile.in_chs
        real = x[:, :in_chs] if x.shape[1] != in_chs else x  # the input may come padded
        tokens = self.former(self.mobile_to_former(real, tokens))
        x = self.mobile(x, tokens[::self.num_tokens])  # token 0 of each sample
        return self.former_to_mobile(x, tokens), tokens


class OrtTokenMerge(nn.Module):
    """TokenMerge: the bridge for token 0 and the 1x1 conv (ReLU6) on the map, returned apart (the head pools
    the map and reads the token: no broadcast token map, no concat of maps)."""

    def __init__(self, merge: nn.Module, num_tokens: int):
        super().__init__()
        self.bridge = OrtMobileToFormer(merge.bridge, num_tokens, first_only=True)
        in_perm = _unshuffle(merge.shuffle, merge.conv.conv.in_channels)
        self.conv = OrtConvNorm(merge.conv, dense=in_perm is not None, in_perm=in_perm)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        token = self.bridge(x, tokens)
        return self.conv(x), token


class OrtMobileFormerHead(nn.Module):
    """MobileFormerHead: pool, h-swish, concat token 0, FC with its BatchNorm1d folded, h-swish, FC."""

    def __init__(self, head: nn.Module):
        super().__init__()
        pool = getattr(head.global_pool, 'pool_type', 'avg')
        assert pool == 'avg', f'the ONNX Runtime form supports the avg pool only, not {pool!r}'
        fc, norm = head.pre_logits.fc, head.pre_logits.norm
        w, b = linear_norm_weights(fc, norm) if isinstance(norm, nn.BatchNorm1d) else (fc.weight, fc.bias)
        self.w1, self.b1 = _const(w), _const(b)
        self.fc = head.fc

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        local = F.hardswish(x.mean((2, 3)))
        feat = F.hardswish(F.linear(torch.cat([local, token], dim=1), self.w1, self.b1))
        return self.fc(feat)


def _stem_order(model: nn.Module) -> torch.Tensor:
    """The stem's channels padded to whole blocks; where the stage-1 block (no skip) then needs fewer convs
    for its multiplier conv, the padding holds copies of the channels instead of zeros (52m, 26m: 8 channels
    twice in one block, so 2 convs of 16 channels instead of 3)."""
    channels = model.stem.conv.out_channels
    padded, copies = _padding(channels, _whole_blocks(channels)), _copies(channels, _whole_blocks(channels))
    lite = model.blocks[0]
    if hasattr(lite, 'mobile_to_former') or lite.has_skip:
        return padded
    multiplier = lite.conv_dw.conv.out_channels // channels
    return copies if len(_pack(copies, channels, multiplier)) < len(_pack(padded, channels, multiplier)) else padded


class OrtMobileFormer(nn.Module):
    """The ONNX Runtime form of an eval MobileFormer (only its parameters are read, by name; the model is left
    alone)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model = copy.deepcopy(model).eval()
        stem_order = _stem_order(model)
        self.stem = OrtConvNorm(model.stem, out_perm=stem_order)
        tokens = model.tokens.detach().clone()
        self.tokens = _const(tokens.unsqueeze(0))
        blocks, first = [], True
        for block in model.blocks:
            if hasattr(block, 'mobile_to_former'):
                blocks.append(OrtMobileFormerBlock(block, len(tokens), tokens if first else None))
                first = False
            else:
                blocks.append(OrtLiteBottleneck(block, stem_order))
        self.blocks = nn.ModuleList(blocks)
        self.merge = OrtTokenMerge(model.merge, len(tokens))
        self.head = OrtMobileFormerHead(model.head)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        tokens = self.tokens
        for block in self.blocks:
            x, tokens = block(x, tokens)
        return self.head(*self.merge(x, tokens))
