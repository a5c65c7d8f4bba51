"""A Mobile-Former form built for runtimes (ONNX Runtime): `DeployMobileFormer(model)`.

Built from the parameters of a plain eval model, read by module name (no fused form, no forward code of the
model is used), so that the exported graph holds only the nodes the math needs:

- every BatchNorm folded into its conv or linear, the hard sigmoids' affine parts and the attention scales
  folded into the linears ahead of them;
- channel shuffles folded away: a grouped pointwise conv next to a shuffle becomes a dense 1x1 conv with its
  rows or columns permuted (and the dynamic ReLU slopes between them permuted alike);
- dynamic ReLU as Max(Mul(x, k1), Mul(x, k2)), no Where, over channels padded to whole blocks of 16 (ORT
  would pad them around each one);
- the two dynamic ReLUs of a block get their slopes from one fc1 Gemm (side by side) and, where that reads
  few extra zeros, one block-diagonal fc2 Gemm (else one Gemm per fc2);
- token-only work precomputed while the tokens are still input-independent (the first Mobile-Former block's
  q(tokens) and gate(tokens)), and the learned tokens broadcast instead of expanded per batch;
- the final bridge computes token 0 only (the head reads nothing else), and the head pools the 1x1 conv's map
  directly (no broadcast token map, no concat of maps);
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
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = ['DeployMobileFormer']


BLOCK = 16  # channels per block of ORT's NCHWc layout: 16 with AVX-512, 8 with AVX2; 16 is whole blocks on both


def _whole_blocks(channels: int) -> int:
    return -(-channels // BLOCK) * BLOCK


def _take(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """t.index_select(dim, index), where an index of -1 gives zeros (a padding channel)."""
    shape = list(t.shape)
    shape[dim] = len(index)
    out = t.new_zeros(shape)
    keep = index >= 0
    return out.index_copy_(dim, keep.nonzero().squeeze(1), t.index_select(dim, index[keep]))


def _then(index: torch.Tensor, perm: Optional[torch.Tensor]) -> torch.Tensor:
    """perm[index], keeping -1 (padding)."""
    if perm is None:
        return index
    return torch.where(index >= 0, perm[index.clamp(min=0)], index)


def _padding(channels: int, total: int) -> torch.Tensor:
    """The index map of `channels` channels followed by zero channels up to `total`."""
    return torch.cat([torch.arange(channels), torch.full((total - channels,), -1)])


def _shuffle_perm(channels: int, groups: int) -> torch.Tensor:
    """y = channel_shuffle(x, groups) is y[:, i] = x[:, perm[i]]."""
    return torch.arange(channels).reshape(groups, channels // groups).t().reshape(-1)


def _dense(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weight (O, I, k, k) of a grouped conv weight (O, I / groups, k, k): block-diagonal."""
    if groups == 1:
        return weight
    out_chs, in_per, kh, kw = weight.shape
    out_per = out_chs // groups
    dense = weight.new_zeros(out_chs, in_per * groups, kh, kw)
    for g in range(groups):
        dense[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = weight[g * out_per:(g + 1) * out_per]
    return dense


class Conv(nn.Module):
    """A conv with its BatchNorm folded in, optional ReLU6 (Clip, which ORT fuses into the Conv)."""

    def __init__(self, convnorm: nn.Module, dense: bool = False, out_perm: Optional[torch.Tensor] = None,
                 in_perm: Optional[torch.Tensor] = None, padded_to: Optional[int] = None):
        super().__init__()
        conv, bn = convnorm.conv, convnorm.bn
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        weight, bias = weight.detach(), bias.detach()
        groups = conv.groups
        if padded_to is not None:  # a depthwise conv over its channels and zero channels up to padded_to
            assert groups == conv.in_channels == conv.out_channels, 'padded_to is for depthwise convs'
            index = _padding(conv.out_channels, padded_to)
            weight, bias, groups = _take(weight, index, 0), _take(bias, index, 0), padded_to
        if dense or out_perm is not None or in_perm is not None:
            weight, groups = _dense(weight, groups), 1
        if out_perm is not None:
            weight, bias = _take(weight, out_perm, 0), _take(bias, out_perm, 0)
        if in_perm is not None:
            weight = _take(weight, in_perm, 1)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
        self.stride, self.padding, self.groups = conv.stride, conv.padding, groups
        act = getattr(bn, 'act', nn.Identity())
        assert isinstance(act, (nn.Identity, nn.ReLU6)), type(act)
        self.relu6 = isinstance(act, nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return x.clamp(0., 6.) if self.relu6 else x


def _copies(channels: int, total: int) -> torch.Tensor:
    """The index map of `channels` channels followed by copies of them (cyclically) up to `total`."""
    return torch.cat([torch.arange(channels), torch.arange(total - channels) % channels])


def _pack(source: torch.Tensor, channels: int, multiplier: int) -> List[torch.Tensor]:
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
    """A depthwise conv with a channel multiplier m (out channel c m + j reads channel c) as plain depthwise
    convs over whole blocks of channels, concatenated: ORT runs neither a multiplier conv nor a concat of
    partial blocks in its blocked layout, and reorders around each. The input comes in whole blocks, its
    slot s holding channel `source[s]` (default: the channels, then zeros); output channel i is channel
    `order[i]` of the original conv, -1 for padding (zero). An input whose spare slots hold copies of
    channels needs fewer convs: each copy serves one more output of its channel per conv."""

    def __init__(self, convnorm: nn.Module, source: Optional[torch.Tensor] = None):
        super().__init__()
        conv = Conv(convnorm)
        channels = convnorm.conv.in_channels
        padded = _whole_blocks(channels)
        self.stride, self.padding, self.groups, self.relu6 = conv.stride, conv.padding, padded, conv.relu6
        rows = _pack(_padding(channels, padded) if source is None else source, channels,
                     convnorm.conv.out_channels // channels)
        self.order = torch.cat(rows)
        self.weights = nn.ParameterList([_const(_take(conv.weight, r, 0)) for r in rows])
        self.biases = nn.ParameterList([_const(_take(conv.bias, r, 0)) for r in rows])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.conv2d(x, w, b, self.stride, self.padding, 1, self.groups) for w, b in zip(self.weights, self.biases)]
        return torch.cat([out.clamp(0., 6.) for out in outs] if self.relu6 else outs, 1)


def _linear(linear: nn.Linear, scale: float = 1., shift: float = 0.) -> Tuple[torch.Tensor, torch.Tensor]:
    return (linear.weight.detach() * scale).clone(), (linear.bias.detach() * scale + shift).clone()


def _const(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().contiguous().clone(), requires_grad=False)


def _split_heads(t: torch.Tensor, tokens: int, heads: int) -> torch.Tensor:
    """(B M, C) -> (B, heads, M, C / heads)."""
    return t.reshape(-1, tokens, heads, t.shape[-1] // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, M, C / heads) -> (B M, C)."""
    return t.transpose(1, 2).reshape(-1, t.shape[1] * t.shape[3])


class Slopes(nn.Module):
    """The slopes of a block's dynamic ReLUs from token 0: one Gemm for their fc1s, then their fc2s.

    2 * hard_sigmoid(z) = clamp(z / 3 + 1, 0, 2) is folded into fc2; k1 = that, k2 = that - 1 for each ReLU.
    `perms` reorder a ReLU's channels (where a channel shuffle was folded away around it; -1: a padding
    channel). Where the zeros of a block-diagonal fc2 pair are few (`ONE_FC2_ZEROS` bytes at most), both fc2s
    are one Gemm over it, and one Clip, Add and split serve both ReLUs: the slopes of a 52m block took 25.4
    instead of 30.3 µs (ORT 1.32, batch 1, the block's slope nodes alone). Elsewhere each fc2 is its own Gemm:
    at batch 1 a Gemm on one token costs what its weights take to read, and the zeros would double them (294m's
    largest pair, 96 → 4608 against two 48 → 2304, 11 of them: 1072 against 649 µs).
    """

    ONE_FC2_ZEROS = 128 * 1024  # bytes: about 3.5 µs of reading at this VM's 37 GB/s, against about 5 µs saved

    def __init__(self, acts: List[nn.Module], perms: List[Optional[torch.Tensor]]):
        super().__init__()
        self.w1 = _const(torch.cat([a.fc1.weight for a in acts]))
        self.b1 = _const(torch.cat([a.fc1.bias for a in acts]))
        self.hidden = [a.fc1.out_features for a in acts]
        weights, biases, shifts = [], [], []
        for a, perm in zip(acts, perms):
            w2, b2 = _linear(a.fc2, 1. / 3., 1.)
            if perm is not None:  # both halves (k1 rows, k2 rows) reordered alike
                idx = torch.cat([perm, torch.where(perm >= 0, perm + a.channels, perm)])
                w2, b2 = _take(w2, idx, 0), _take(b2, idx, 0)
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

    def forward(self, token: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
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


def dyrelu(x: torch.Tensor, k: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """max(k1 x, k2 x): measured in ORT 1.32 (52m, batch 1) against kneg x + (kpos - kneg) relu(x) (0.97x) and
    kpos prelu(x, kneg / kpos) (0.79x)."""
    return torch.maximum(x * k[0], x * k[1])


class Bridge(nn.Module):
    """Mobile→Former: tokens read the map, softmax over pixels, gated, projected, residual, LayerNorm.

    With `tokens` (the learned ones), q(tokens) and gate(tokens) are constants; with `first_only`, only token 0
    is computed.
    """

    def __init__(self, m2f: nn.Module, num_tokens: int, tokens: Optional[torch.Tensor] = None,
                 first_only: bool = False):
        super().__init__()
        self.heads = m2f.num_heads
        c = m2f.q.out_features
        self.c = c
        self.num_tokens = num_tokens
        wq, bq = _linear(m2f.q, m2f.scale)
        wg, bg = _linear(m2f.gate, 1. / 3., 1.)
        self.const = tokens is not None
        self.first_only = first_only
        if self.const:
            with torch.no_grad():
                self.q_const = _const(_split_heads(F.linear(tokens, wq, bq), num_tokens, self.heads))
                self.gate_const = _const(F.linear(tokens, wg, bg).clamp(0., 2.))
        else:
            self.wq, self.bq = _const(wq), _const(bq)
            self.wg, self.bg = _const(wg), _const(bg)
        self.wp, self.bp = _const(m2f.proj.weight), _const(m2f.proj.bias)
        self.norm = nn.LayerNorm(m2f.norm.normalized_shape, eps=m2f.norm.eps)
        self.norm.load_state_dict(m2f.norm.state_dict())

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


class Former(nn.Module):
    def __init__(self, former: nn.Module, num_tokens: int):
        super().__init__()
        self.heads, self.num_tokens = former.num_heads, num_tokens
        wq, bq = _linear(former.q, former.scale)
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
    """Softmax over dim -2 (the few tokens), spelled out: ORT 1.32 runs Softmax on an inner axis as transposes
    around a last-axis softmax, 2.4x (batch 1) to 6.6x (batch 16) slower on (B, 2, 3, 56 x 56)."""
    e = torch.exp(logits - logits.amax(-2, keepdim=True))
    return e / e.sum(-2, keepdim=True)


class PixelsReadTokens(nn.Module):
    """Former→Mobile: every pixel reads the tokens (softmax over tokens) and adds the readout."""

    def __init__(self, f2m: nn.Module, num_tokens: int):
        super().__init__()
        self.heads, self.num_tokens = f2m.num_heads, num_tokens
        wk, bk = _linear(f2m.k, f2m.scale)
        self.c = f2m.k.out_features
        # k and v in one Gemm
        self.wkv = _const(torch.cat([wk, f2m.v.weight.detach()]))
        self.bkv = _const(torch.cat([bk, f2m.v.bias.detach()]))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h, c = self.heads, self.c
        kv = _split_heads(F.linear(tokens, self.wkv, self.bkv), self.num_tokens, 2 * h)  # (B, 2h, M, c/h)
        k, v = kv[:, :h], kv[:, h:]
        pixels = x.flatten(2).unflatten(1, (h, c // h))  # (B, h, c/h, HW)
        attn = softmax_over_tokens(k @ pixels)  # (B, h, M, HW)
        out = pixels + v.transpose(-1, -2) @ attn
        return out.reshape(x.shape)


class Lite(nn.Module):
    """The stage-1 bottleneck. Its multiplier depthwise conv is split (`SplitDepthwise`): the input comes padded
    to whole blocks; with a skip, the output is padded alike."""

    def __init__(self, block: nn.Module, source: Optional[torch.Tensor] = None):
        super().__init__()
        shuffle = block.shuffle
        in_perm = None
        if not isinstance(shuffle, nn.Identity):
            in_perm = _inv(_shuffle_perm(block.conv_dw.conv.out_channels, shuffle.groups))
        self.conv_dw = SplitDepthwise(block.conv_dw, source)
        self.has_skip = block.has_skip
        out_chs = block.conv_pw.conv.out_channels
        padded_out = self.has_skip and _whole_blocks(out_chs) != out_chs
        self.conv_pw = Conv(block.conv_pw, in_perm=_then(self.conv_dw.order, in_perm),
                            out_perm=_padding(out_chs, _whole_blocks(out_chs)) if padded_out else None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_pw(self.conv_dw(x))
        return (out + x if self.has_skip else out), tokens


def _inv(perm: torch.Tensor) -> torch.Tensor:
    return torch.argsort(perm)


class Block(nn.Module):
    """A Mobile-Former block. In a downsampling block both multiplier depthwise convs are split
    (`SplitDepthwise`): the input is padded to whole blocks (unless it comes padded from the stage-1 block),
    and so is the inner residual; the bridges read the real channels."""

    def __init__(self, block: nn.Module, num_tokens: int, tokens: Optional[torch.Tensor]):
        super().__init__()
        self.num_tokens = num_tokens
        self.m2f = Bridge(block.mobile_to_former, num_tokens, tokens)
        self.former = Former(block.former, num_tokens)
        mobile = block.mobile
        self.down = hasattr(mobile, 'conv_dw1')
        if self.down:
            p1 = p2 = None
            if not isinstance(mobile.shuffle_dw1, nn.Identity):
                p1 = _inv(_shuffle_perm(mobile.conv_dw1.conv.out_channels, mobile.shuffle_dw1.groups))
            if not isinstance(mobile.shuffle_dw2, nn.Identity):
                p2 = _inv(_shuffle_perm(mobile.conv_dw2.conv.out_channels, mobile.shuffle_dw2.groups))
            self.in_chs, self.out_chs = mobile.conv_dw1.conv.in_channels, mobile.conv_pw1.conv.out_channels
            out_pad = _padding(self.out_chs, _whole_blocks(self.out_chs))
            self.conv1 = SplitDepthwise(mobile.conv_dw1)
            self.conv2 = Conv(mobile.conv_pw1, in_perm=_then(self.conv1.order, p1), out_perm=out_pad)
            self.conv3 = SplitDepthwise(mobile.conv_dw2)
            self.conv4 = Conv(mobile.conv_pw2, in_perm=_then(self.conv3.order, p2), out_perm=out_pad)
            self.slopes = Slopes([mobile.act1, mobile.act2], [_then(self.conv1.order, p1), _then(self.conv3.order, p2)])
            self.has_skip = False
        else:
            self.in_chs = mobile.conv_pw.conv.in_channels
            g1 = getattr(mobile.shuffle_pw, 'groups', None)
            g2 = getattr(mobile.shuffle_pwl, 'groups', None)
            hidden = mobile.conv_pw.conv.out_channels
            perm1 = None if g1 is None else _shuffle_perm(hidden, g1)
            # the expanded channels padded to whole blocks here, not by ORT around each dynamic ReLU
            pad = _padding(hidden, _whole_blocks(hidden)) if _whole_blocks(hidden) != hidden else None
            self.conv1 = Conv(mobile.conv_pw, out_perm=perm1 if pad is None else _then(pad, perm1))
            self.conv2 = Conv(mobile.conv_dw, padded_to=None if pad is None else len(pad))
            self.conv3 = Conv(mobile.conv_pwl, in_perm=pad, out_perm=None if g2 is None else
                              _shuffle_perm(mobile.conv_pwl.conv.out_channels, g2))
            self.slopes = Slopes([mobile.act1, mobile.act2], [pad, pad])
            self.has_skip = mobile.has_skip
        self.f2m = PixelsReadTokens(block.former_to_mobile, num_tokens)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        real = x[:, :self.in_chs] if x.shape[1] != self.in_chs else x  # the input may come padded
        tokens = self.former(self.m2f(real, tokens))
        k1, k2 = self.slopes(tokens[::self.num_tokens])  # token 0 of each sample
        if self.down:
            if x.shape[1] != _whole_blocks(self.in_chs):
                x = F.pad(x, (0, 0, 0, 0, 0, _whole_blocks(self.in_chs) - self.in_chs))
            out = self.conv2(dyrelu(self.conv1(x), k1))
            out = self.conv4(dyrelu(self.conv3(out), k2)) + out
            if out.shape[1] != self.out_chs:
                out = out[:, :self.out_chs]
        else:
            out = self.conv3(dyrelu(self.conv2(dyrelu(self.conv1(x), k1)), k2))
            if self.has_skip:
                out = out + x
        return self.f2m(out, tokens), tokens


class Head(nn.Module):
    """Token merge and classifier: bridge for token 0, 1x1 conv (ReLU6) on the map, pool, h-swish, concat
    token 0, FC with its BatchNorm1d folded, h-swish, FC."""

    def __init__(self, merge: nn.Module, head: nn.Module, num_tokens: int):
        super().__init__()
        self.bridge = Bridge(merge.bridge, num_tokens, first_only=True)
        in_perm = None
        if not isinstance(merge.shuffle, nn.Identity):
            in_perm = _inv(_shuffle_perm(merge.conv.conv.in_channels, merge.shuffle.groups))
        self.conv = Conv(merge.conv, dense=in_perm is not None, in_perm=in_perm)
        pool = getattr(head.global_pool, 'pool_type', 'avg')
        assert pool == 'avg', f'deploy form supports the avg pool only, not {pool!r}'
        fc, norm = head.pre_logits.fc, head.pre_logits.norm
        if isinstance(norm, nn.BatchNorm1d):
            w, b = fuse_linear_bn_weights(fc.weight, fc.bias, norm.running_mean, norm.running_var, norm.eps,
                                          norm.weight, norm.bias)
        else:
            w, b = fc.weight, fc.bias
        self.w1, self.b1 = _const(w), _const(b)
        self.fc = head.fc

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        token = self.bridge(x, tokens)
        local = F.hardswish(self.conv(x).mean((2, 3)))
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


class DeployMobileFormer(nn.Module):
    """The runtime form of an eval Mobile-Former (plain or fused is not read: only parameters by name)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model = copy.deepcopy(model).eval()
        stem_order = _stem_order(model)
        self.stem = Conv(model.stem, out_perm=stem_order)
        tokens = model.tokens.detach().clone()
        self.tokens = _const(tokens.unsqueeze(0))
        blocks, first = [], True
        for block in model.blocks:
            if hasattr(block, 'mobile_to_former'):
                blocks.append(Block(block, len(tokens), tokens if first else None))
                first = False
            else:
                blocks.append(Lite(block, stem_order))
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(model.merge, model.head, len(tokens))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        tokens = self.tokens
        for block in self.blocks:
            x, tokens = block(x, tokens)
        return self.head(x, tokens)
