""" Mobile-Former

Paper: `Mobile-Former: Bridging MobileNet and Transformer` - https://arxiv.org/abs/2108.05895 (CVPR 2022)

A MobileNet branch on the feature map and a tiny Transformer on a handful of learnable global tokens run
in parallel, joined by two light cross-attention bridges (Mobile→Former and Former→Mobile). The first
global token drives a two-slope dynamic ReLU in every Mobile sub-block.

Written from the architecture as the authors' code builds it (github.com/AAboys/MobileFormer), including
the parts the paper leaves out: the gate in Mobile→Former, the inner residual of the down-sample block,
the final Mobile→Former bridge before the head, the head's ReLU6 / h-swish / BatchNorm1d and the
authors' initialisation. `checkpoint_filter_fn` loads the authors' released checkpoints.
"""
import math
import re
from collections.abc import Sequence
from functools import cache
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, ConvNormAct, DropPath, SelectAdaptivePool2d, get_device_dtype
from timm.models import (
    build_model_with_cfg,
    checkpoint,
    generate_default_cfgs,
    register_model,
    register_notrace_function,
    reparameterize_model,
)

from .errors import CheckpointError
from .hub import (
    AUTHORS_CHECKPOINT_URLS,
    WEIGHTS_FILENAME,
    WEIGHTS_LICENSE,
    authors_filename,
    explain_unreachable_weights,
    hub_id,
)
from .layers import fused
from .layers.ops import (
    channel_shuffle,
    dynamic_relu,
    merge_heads,
    pixel_heads,
    pixels_add_tokens,
    pixels_read_tokens,
    split_heads,
    tokens_read_pixels,
)
from .pickles import allow_checkpoint_globals

__all__ = ['MobileFormer']

# (kind, expansion, out_chs, stride); kind is 'lite' (bneck-lite), 'down' (Mobile-Former↓) or 'mf'
BlockCfg = tuple[str, float, int, int]


@register_notrace_function
def check_image_batch(x: torch.Tensor, in_chans: int, dtype: torch.dtype) -> None:
    """Fail early, with what was expected, on input that is not a non-empty (N, C, H, W) image batch of the
    weights' float dtype (under autocast, any float dtype)."""
    if x.ndim != 4:
        raise ValueError(
            f'MobileFormer expects a 4-D image batch (N, {in_chans}, H, W); got a {x.ndim}-D tensor of shape '
            f'{tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0) for a single image.')
    if x.shape[1] != in_chans:
        raise ValueError(
            f'MobileFormer was built for {in_chans} input channels; got {x.shape[1]} (shape {tuple(x.shape)}). '
            f'Pass in_chans={x.shape[1]} to timm.create_model, or convert the images.')
    if x.shape[0] == 0:
        raise ValueError(f'MobileFormer got an empty batch (batch size 0, shape {tuple(x.shape)}): pass at least '
                         f'one image.')
    if not x.is_floating_point():
        raise TypeError(
            f'MobileFormer expects a floating point image batch; got dtype {x.dtype}. '
            f'Normalise the images first, e.g. x.float() / 255 then the mean/std of the model\'s pretrained_cfg.')
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f'MobileFormer\'s weights are {dtype}; got a {x.dtype} batch. Convert the batch with x.to({dtype}), '
            f'or the model with model.to({x.dtype}), or run under torch.autocast.')


@register_notrace_function
def check_batch_statistics(x: torch.Tensor, training: bool) -> None:
    """In train mode the head's BatchNorm1d needs two or more images; say so instead of torch's message."""
    if training and x.shape[0] == 1:
        raise ValueError('MobileFormer got a batch of one in train mode, where the head\'s BatchNorm1d needs at '
                         'least 2 images: call model.eval() for inference, or train with a larger batch.')


def feature_indices(num_taps: int, indices: Optional[Union[int, list[int]]] = None) -> tuple[list[int], int]:
    """timm's feature-tap selection: all taps for None, the last n for an int, those listed (negative from the
    end) for a sequence. Returns the absolute indices and the largest."""
    if indices is None:
        indices = num_taps
    if isinstance(indices, int):
        if not 0 < indices <= num_taps:
            raise ValueError(f'last-n ({indices}) is out of range (1 to {num_taps})')
        taken = [num_taps - indices + i for i in range(indices)]
    else:
        taken: list[int] = []
        for i in indices:
            idx = num_taps + i if i < 0 else i
            if not 0 <= idx < num_taps:
                raise ValueError(f'feature index {idx} is out of range (0 to {num_taps - 1})')
            taken.append(idx)
    return taken, max(taken)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: view channels as (groups, C // groups), transpose, flatten."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)


class ConvNorm(ConvNormAct):
    """timm's ConvNormAct (bias-free conv, BatchNorm, optional static activation) that can fold into one conv."""

    def fuse(self) -> nn.Module:
        """The inference form: one conv with the BatchNorm (and the ReLU6, if any) folded in."""
        return fused.fold_conv_norm(self)


def conv_norm(
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act_layer: Optional[type] = None,
        device=None,
        dtype=None,
) -> ConvNorm:
    """Bias-free conv + BatchNorm, with an optional static activation."""
    return ConvNorm(
        in_chs, out_chs, kernel_size, stride=stride, groups=groups,
        apply_act=act_layer is not None, act_layer=act_layer, device=device, dtype=dtype,
    )


class DynamicReLU(nn.Module):
    """Two-slope dynamic ReLU, y = max(k1 * x, k2 * x) per channel, with k1 in [0, 2] and k2 in [-1, 1].

    The slopes come from the first global token through a two-layer MLP and a hard sigmoid. This is the
    authors' reduced DY-ReLU: two slopes, no intercepts; at their initialisation it is exactly ReLU.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(token_dim, token_dim // reduction, **dd)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * channels, **dd)

    def slopes(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-channel slopes (k1, k2), each (B, C, 1, 1), from token (B, d):
        k1 = 2 a and k2 = 2 b - 1 for (a, b) = hard_sigmoid(MLP(token))."""
        k = F.hardsigmoid(self.fc2(F.relu(self.fc1(token)))) * 2.
        k1, k2 = k.reshape(k.shape[0], 2, self.channels, 1, 1).unbind(1)
        return k1, k2 - 1.

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        k1, k2 = self.slopes(token)
        return dynamic_relu(x, k1, k2)  # max(k1 * x, k2 * x)

    def fuse(self) -> nn.Module:
        """The inference form: the hard sigmoid's affine part and the factor 2 folded into fc2."""
        return fused.fold_dynamic_relu(self)


class MobileToFormer(nn.Module):
    """Mobile→Former bridge: the tokens attend over the pixels of the feature map.

    Queries are projected from the tokens; keys and values are the feature map itself, split into
    `num_heads` contiguous channel groups. A gate from the incoming tokens, 2 * hard_sigmoid(W z),
    scales the attended features before the output projection; then residual add and post-LayerNorm.
    """

    def __init__(
            self,
            in_chs: int,
            token_dim: int,
            num_heads: int = 2,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_heads = num_heads
        self.scale = (in_chs // num_heads) ** -0.5
        self.gate = nn.Linear(token_dim, in_chs, **dd)
        self.q = nn.Linear(token_dim, in_chs, **dd)
        self.proj = nn.Linear(in_chs, token_dim, **dd)
        self.norm = nn.LayerNorm(token_dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of each token over the pixels of x: (B, heads, M, H * W), rows sum to 1."""
        q = split_heads(self.q(tokens), self.num_heads)
        return torch.softmax(q @ pixel_heads(x, self.num_heads) * self.scale, dim=-1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q(tokens), self.num_heads)
        out = merge_heads(tokens_read_pixels(q, x, self.scale))  # softmax(q xᵀ * scale) x
        out = out * F.hardsigmoid(self.gate(tokens)) * 2.
        return self.norm(tokens + self.drop_path(self.proj(out)))

    def fuse(self) -> nn.Module:
        """The inference form: the attention scale folded into q, the gate's 2 * hard_sigmoid into gate."""
        return fused.fold_mobile_to_former(self)


class Former(nn.Module):
    """The Transformer on the global tokens, post-norm.

    Attention projects only the queries: keys and values are the tokens themselves (the authors' code
    has no key or value projection here), followed by an output projection. FFN expansion is 2.
    """

    def __init__(
            self,
            token_dim: int,
            num_heads: int = 4,
            mlp_ratio: float = 2.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_heads = num_heads
        self.scale = (token_dim // num_heads) ** -0.5
        self.q = nn.Linear(token_dim, token_dim, **dd)
        self.proj = nn.Linear(token_dim, token_dim, **dd)
        self.norm1 = nn.LayerNorm(token_dim, **dd)
        hidden_dim = int(token_dim * mlp_ratio)
        self.fc1 = nn.Linear(token_dim, hidden_dim, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, token_dim, **dd)
        self.norm2 = nn.LayerNorm(token_dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = split_heads(tokens, self.num_heads)
        q = split_heads(self.q(tokens), self.num_heads)
        out = F.scaled_dot_product_attention(q, kv, kv, scale=self.scale)  # softmax(q kᵀ * scale) v
        tokens = self.norm1(tokens + self.drop_path(self.proj(merge_heads(out))))
        return self.norm2(tokens + self.fc2(self.act(self.fc1(tokens))))


class FormerToMobile(nn.Module):
    """Former→Mobile bridge: every pixel attends over the tokens and adds what it reads.

    Queries are the feature map itself (no projection), split into `num_heads` contiguous channel groups;
    keys and values are projected from the tokens. No norm, no output projection.
    """

    def __init__(
            self,
            out_chs: int,
            token_dim: int,
            num_heads: int = 2,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_heads = num_heads
        self.scale = (out_chs // num_heads) ** -0.5
        self.k = nn.Linear(token_dim, out_chs, **dd)
        self.v = nn.Linear(token_dim, out_chs, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of each pixel over the tokens, laid out (B, heads, M, H * W); columns sum to 1."""
        k = split_heads(self.k(tokens), self.num_heads)
        return torch.softmax(k @ pixel_heads(x, self.num_heads) * self.scale, dim=-2)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        k = split_heads(self.k(tokens), self.num_heads)
        v = split_heads(self.v(tokens), self.num_heads)
        # every pixel p of x reads softmax(p kᵀ * scale) v over the tokens
        if isinstance(self.drop_path, nn.Identity) or not self.training:
            return pixels_add_tokens(x, k, v, self.scale)
        return x + self.drop_path(pixels_read_tokens(x, k, v, self.scale))

    def fuse(self) -> nn.Module:
        """The inference form: the attention scale folded into k."""
        return fused.fold_former_to_mobile(self)


class LiteBottleneck(nn.Module):
    """Stage-1 'bneck-lite': 3x3 depthwise expansion (ReLU6), linear pointwise projection.

    Static activations and no bridges: the tokens pass through unchanged.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int,
            exp_ratio: float,
            pw_groups: int = 1,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        mid_chs = int(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = conv_norm(in_chs, mid_chs, 3, stride, groups=in_chs, act_layer=nn.ReLU6, **dd)
        self.shuffle = ChannelShuffle(in_chs) if pw_groups > 1 else nn.Identity()
        self.conv_pw = conv_norm(mid_chs, out_chs, groups=pw_groups, **dd)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_pw(self.shuffle(self.conv_dw(x)))
        if self.has_skip:
            out = out + x
        return out, tokens


class InvertedBottleneck(nn.Module):
    """Mobile sub-block of a stride-1 Mobile-Former block: pw → dw → pw, dynamic ReLU after the first two."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            exp_ratio: float,
            token_dim: int,
            pw_groups: int = 1,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        mid_chs = round(in_chs * exp_ratio)
        self.has_skip = in_chs == out_chs
        self.conv_pw = conv_norm(in_chs, mid_chs, groups=pw_groups, **dd)
        self.shuffle_pw = ChannelShuffle(pw_groups) if pw_groups > 1 else nn.Identity()
        self.act1 = DynamicReLU(mid_chs, token_dim, **dd)
        self.conv_dw = conv_norm(mid_chs, mid_chs, 3, groups=mid_chs, **dd)
        self.act2 = DynamicReLU(mid_chs, token_dim, **dd)
        self.conv_pwl = conv_norm(mid_chs, out_chs, groups=pw_groups, **dd)
        self.shuffle_pwl = ChannelShuffle(pw_groups) if pw_groups > 1 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.shuffle_pw(self.conv_pw(x)), token)
        out = self.act2(self.conv_dw(out), token)
        out = self.shuffle_pwl(self.conv_pwl(out))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class DownsampleBottleneck(nn.Module):
    """Mobile sub-block of a Mobile-Former↓ block: dw(stride 2) → pw → dw → pw, inner residual.

    The first depthwise conv expands by `exp_ratio` x in_chs, the second by `exp_ratio2` x out_chs;
    dynamic ReLU follows each depthwise conv; the residual wraps the second dw → pw pair.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int,
            exp_ratio: float,
            token_dim: int,
            exp_ratio2: float = 4.,
            pw_groups: int = 1,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        mid_chs1 = round(in_chs * exp_ratio)
        mid_chs2 = round(out_chs * exp_ratio2)
        self.conv_dw1 = conv_norm(in_chs, mid_chs1, 3, stride, groups=in_chs, **dd)
        self.shuffle_dw1 = ChannelShuffle(in_chs) if pw_groups > 1 else nn.Identity()
        self.act1 = DynamicReLU(mid_chs1, token_dim, **dd)
        self.conv_pw1 = conv_norm(mid_chs1, out_chs, groups=pw_groups, **dd)
        self.conv_dw2 = conv_norm(out_chs, mid_chs2, 3, groups=out_chs, **dd)
        self.shuffle_dw2 = ChannelShuffle(out_chs) if pw_groups > 1 else nn.Identity()
        self.act2 = DynamicReLU(mid_chs2, token_dim, **dd)
        self.conv_pw2 = conv_norm(mid_chs2, out_chs, groups=pw_groups, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.shuffle_dw1(self.conv_dw1(x)), token)
        shortcut = self.conv_pw1(out)
        out = self.act2(self.shuffle_dw2(self.conv_dw2(shortcut)), token)
        return self.drop_path(self.conv_pw2(out)) + shortcut


class MobileFormerBlock(nn.Module):
    """One Mobile-Former block, mapping (x, tokens) to (x', tokens').

    tokens' = Former(MobileToFormer(x, tokens)); the Mobile sub-block runs on x with its dynamic ReLUs
    driven by tokens'[0]; FormerToMobile then reads tokens' into the Mobile output.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int,
            exp_ratio: float,
            token_dim: int,
            pw_groups: int = 1,
            bridge_heads: int = 2,
            former_heads: int = 4,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.mobile_to_former = MobileToFormer(in_chs, token_dim, bridge_heads, drop_path, **dd)
        self.former = Former(token_dim, former_heads, drop_path=drop_path, **dd)
        if stride > 1:
            self.mobile = DownsampleBottleneck(
                in_chs, out_chs, stride, exp_ratio, token_dim, pw_groups=pw_groups, drop_path=drop_path, **dd)
        else:
            self.mobile = InvertedBottleneck(
                in_chs, out_chs, exp_ratio, token_dim, pw_groups=pw_groups, drop_path=drop_path, **dd)
        self.former_to_mobile = FormerToMobile(out_chs, token_dim, bridge_heads, drop_path, **dd)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.former(self.mobile_to_former(x, tokens))
        x = self.mobile(x, tokens[:, 0])
        return self.former_to_mobile(x, tokens), tokens


class TokenMerge(nn.Module):
    """Joins the global tokens to the last feature map, ahead of the classifier.

    A final Mobile→Former bridge lets the tokens read the last map; a 1x1 conv (BN, ReLU6) expands the map;
    token 0 is broadcast over the map and concatenated as extra channels, so that the merged map carries
    everything the classifier needs.
    """

    def __init__(
            self,
            in_chs: int,
            token_dim: int,
            exp_ratio: float = 6.,
            pw_groups: int = 1,
            bridge_heads: int = 2,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.conv_chs = int(in_chs * exp_ratio)
        self.out_chs = self.conv_chs + token_dim
        self.bridge = MobileToFormer(in_chs, token_dim, bridge_heads, drop_path, **dd)
        self.shuffle = ChannelShuffle(pw_groups) if pw_groups > 1 else nn.Identity()
        self.conv = conv_norm(in_chs, self.conv_chs, groups=pw_groups, act_layer=nn.ReLU6, **dd)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        token = self.bridge(x, tokens)[:, 0]
        x = self.conv(self.shuffle(x))
        b, _, h, w = x.shape
        return torch.cat([x, token[:, :, None, None].expand(b, token.shape[1], h, w)], dim=1)


class TakeFeatures(nn.Module):
    """Stands in for TokenMerge once the head is pruned: the feature map passes through, tokens are dropped."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return x


class MobileFormerHead(nn.Module):
    """Classifier on the merged map: pool + h-swish on the local channels, concat token 0,
    FC → BatchNorm1d → h-swish (pre-logits), dropout, FC.
    """

    def __init__(
            self,
            local_chs: int,
            token_dim: int,
            hidden_size: int,
            num_classes: int = 1000,
            pool_type: str = 'avg',
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.local_chs = local_chs
        self.num_features = hidden_size
        self.global_pool = self._make_pool(pool_type)
        self.local_act = nn.Hardswish()
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module('fc', nn.Linear(local_chs + token_dim, hidden_size, **dd))
        self.pre_logits.add_module('norm', nn.BatchNorm1d(hidden_size, **dd))
        self.pre_logits.add_module('act', nn.Hardswish())
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _make_pool(pool_type: str) -> SelectAdaptivePool2d:
        pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        if pool.feat_mult() != 1:
            raise ValueError(f'global_pool={pool_type!r} changes the pooled width; use avg, max, avgmax or "".')
        return pool

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        dd = get_device_dtype(self)
        if pool_type is not None:
            self.global_pool = self._make_pool(pool_type)
        self.fc = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool.is_identity():
            return x
        if not torch.jit.is_scripting():
            check_batch_statistics(x, self.training)
        local = self.local_act(self.global_pool(x[:, :self.local_chs]))
        x = self.pre_logits(torch.cat([local, x[:, self.local_chs:, 0, 0]], dim=1))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def fuse(self) -> 'MobileFormerHead':
        """Fold the pre-logits BatchNorm1d into the FC ahead of it (an Identity takes its place)."""
        if isinstance(self.pre_logits.norm, nn.BatchNorm1d):
            self.pre_logits.fc = fused.fold_head_norm(self.pre_logits.fc, self.pre_logits.norm)
            self.pre_logits.norm = nn.Identity()
        return self


class MobileFormer(nn.Module):
    """Mobile-Former image classifier.

    forward_features returns the merged map of `TokenMerge` (the 1x1-expanded last feature map with token 0
    broadcast as extra channels, `num_features` = 6 * C_last + token_dim), so that forward_head needs
    nothing else; `features_only` / forward_intermediates give the Mobile feature maps at strides 2 to 32.

    Args:
        blocks: (kind, expansion, out_chs, stride) per block; kind is 'lite', 'down' or 'mf'.
        stem_chs: Width of the 3x3 stride-2 stem.
        num_tokens: Number of global tokens M.
        token_dim: Token width d.
        head_hidden_size: Width of the hidden FC of the classifier.
        pw_groups: Groups of every pointwise conv (4 with channel shuffles in 26m, else 1).
        head_exp_ratio: Expansion of the 1x1 conv ahead of the classifier.
        bridge_heads: Heads of both bridges.
        former_heads: Heads of the Former attention.
        num_classes: Number of classes; 0 returns the pre-logits.
        in_chans: Input image channels.
        global_pool: Pooling of the merged map; '' returns it unpooled.
        drop_rate: Dropout before the last FC.
        drop_path_rate: Stochastic depth, ramped linearly over the blocks as in the authors' code.
    """

    def __init__(
            self,
            blocks: Sequence[BlockCfg],
            stem_chs: int,
            num_tokens: int,
            token_dim: int,
            head_hidden_size: int,
            pw_groups: int = 1,
            head_exp_ratio: float = 6.,
            bridge_heads: int = 2,
            former_heads: int = 4,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.tokens = nn.Parameter(torch.empty(num_tokens, token_dim, **dd))
        self.stem = conv_norm(in_chans, stem_chs, 3, stride=2, act_layer=nn.ReLU6, **dd)

        stride = 2
        self.feature_info = [dict(num_chs=stem_chs, reduction=stride, module='stem')]
        # number of blocks run before each feature tap; a tap at the stem has 0
        self.stage_ends = [0]
        in_chs = stem_chs
        layers = []
        for i, (kind, exp_ratio, out_chs, block_stride) in enumerate(blocks):
            dpr = drop_path_rate * (i + 1) / len(blocks)
            if kind == 'lite':
                layers.append(LiteBottleneck(in_chs, out_chs, block_stride, exp_ratio, pw_groups, **dd))
            else:
                assert (kind == 'down') == (block_stride > 1), f'block {i}: {kind} with stride {block_stride}'
                layers.append(MobileFormerBlock(
                    in_chs, out_chs, block_stride, exp_ratio, token_dim, pw_groups=pw_groups,
                    bridge_heads=bridge_heads, former_heads=former_heads, drop_path=dpr, **dd,
                ))
            if block_stride > 1:
                stride *= block_stride
                self.feature_info.append(dict(num_chs=out_chs, reduction=stride, module=f'blocks.{i}'))
                self.stage_ends.append(i + 1)
            else:
                self.feature_info[-1] = dict(num_chs=out_chs, reduction=stride, module=f'blocks.{i}')
                self.stage_ends[-1] = i + 1
            in_chs = out_chs
        self.blocks = nn.ModuleList(layers)

        self.merge = TokenMerge(in_chs, token_dim, head_exp_ratio, pw_groups, bridge_heads, drop_path_rate, **dd)
        self.num_features = self.merge.out_chs
        self.head_hidden_size = head_hidden_size
        self.head = MobileFormerHead(
            self.merge.conv_chs, token_dim, head_hidden_size, num_classes, global_pool, drop_rate, **dd)
        self.init_weights()

    @torch.jit.ignore
    def init_weights(self) -> None:
        """The authors' initialisation: fan-out He normal for every conv, N(0, 0.01) for every Linear,
        BatchNorm2d to (1, 0), LayerNorm and BatchNorm1d at their PyTorch defaults, tokens N(0, 1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0., math.sqrt(2. / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0., 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
                m.reset_parameters()
        if self.tokens is not None:
            nn.init.normal_(self.tokens)

    @torch.jit.ignore
    def fuse(self, channels_last: bool = True) -> 'MobileFormer':
        """Turn this model, in place, into its inference form and return it; calling it again changes nothing.

        Every part with a `fuse()` is replaced by its inference form (layers/fused.py): BatchNorms folded into
        the convs and linears ahead of them, attention scales into the query and key projections, the hard
        sigmoids' affine parts into the layers that feed them. Then the weights are stored where eager CPU
        kernels read them fastest (`fused.cpu_layouts`; with `channels_last` the network runs channels_last,
        and feature maps come out so). Eval outputs stay the same to float32 rounding. Training after fusing
        is not supported: the BatchNorms are gone. timm's `reparameterize_model` gives the same values
        without the weight layouts.
        """
        reparameterize_model(self, inplace=True)
        fused.cpu_layouts(self, (self.blocks, self.merge), channels_last)
        return self.eval()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The authors decay the token table with the other 2-D weights; 1-D params are excluded by timm anyway.
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r'^tokens|^stem',
            blocks=[(r'^blocks\.(\d+)', None), (r'^merge', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def _init_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens is None:  # pruned to taps that no Mobile-Former block reaches
            return x.new_zeros(0)
        return self.tokens.unsqueeze(0).expand(x.shape[0], -1, -1)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, list[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Args:
            x: Input image tensor.
            indices: Take last n feature taps if int, all if None, those listed if a sequence.
                The taps are the Mobile feature maps at strides 2, 4, 8, 16 and 32.
            norm: Unused, the feature maps have no output norm.
            stop_early: Stop iterating over blocks when the last desired tap is reached.
            output_fmt: Shape of intermediate feature outputs, only 'NCHW'.
            intermediates_only: Only return intermediate features.

        Returns:
            List of intermediate features, or a tuple of (final features, intermediates).
        """
        assert output_fmt == 'NCHW', 'Output format must be NCHW.'
        if not torch.jit.is_scripting():
            check_image_batch(x, self.in_chans, next(self.parameters()).dtype)
        take_indices, max_index = feature_indices(len(self.stage_ends), indices)
        take_after = [self.stage_ends[i] for i in take_indices]
        last_block = self.stage_ends[max_index] if stop_early else len(self.blocks)

        intermediates = []
        x = self.stem(x)
        tokens = self._init_tokens(x)
        if 0 in take_after:
            intermediates.append(x)
        for i, block in enumerate(self.blocks):
            if i >= last_block:
                break
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x, tokens = checkpoint(block, x, tokens)
            else:
                x, tokens = block(x, tokens)
            if i + 1 in take_after:
                intermediates.append(x)

        if intermediates_only:
            return intermediates
        if last_block == len(self.blocks):
            x = self.merge(x, tokens)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, list[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Prune the blocks past the last tap in `indices` and, with `prune_head`, the token merge and head."""
        take_indices, max_index = feature_indices(len(self.stage_ends), indices)
        num_blocks = self.stage_ends[max_index]
        if num_blocks < len(self.blocks) and not prune_head:
            raise ValueError('Pruning blocks removes the input of the classifier head; use prune_head=True.')
        self.blocks = self.blocks[:num_blocks]
        self.stage_ends = self.stage_ends[:max_index + 1]
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_head:
            self.merge = TakeFeatures()
            self.num_features = self.head_hidden_size = self.feature_info[-1]['num_chs']
            self.head = ClassifierHead(self.num_features, 0, pool_type='', drop_rate=self.drop_rate)
            self.reset_classifier(0, '')
            if not any(isinstance(b, MobileFormerBlock) for b in self.blocks):
                self.tokens = None
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            check_image_batch(x, self.in_chans, next(self.parameters()).dtype)
        x = self.stem(x)
        tokens = self._init_tokens(x)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x, tokens = checkpoint(block, x, tokens)
            else:
                x, tokens = block(x, tokens)
        return self.merge(x, tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


# (pattern, replacement) from the authors' key names to ours; the first that matches applies
_OFFICIAL_KEY_RULES = (
    (r'^tokens\.weight$', 'tokens'),
    (r'^stem\.0\.', 'stem.conv.'),
    (r'^stem\.1\.', 'stem.bn.'),
    (r'^features\.(\d+)\.conv\.0\.', r'blocks.\1.conv_dw.conv.'),
    (r'^features\.(\d+)\.conv\.1\.', r'blocks.\1.conv_dw.bn.'),
    (r'^features\.(\d+)\.conv\.4\.', r'blocks.\1.conv_pw.conv.'),
    (r'^features\.(\d+)\.conv\.5\.', r'blocks.\1.conv_pw.bn.'),
    (r'^features\.(\d+)\.local_global\.alpha\.0\.', r'blocks.\1.mobile_to_former.gate.'),
    (r'^features\.(\d+)\.local_global\.layer_norm\.', r'blocks.\1.mobile_to_former.norm.'),
    (r'^features\.(\d+)\.local_global\.', r'blocks.\1.mobile_to_former.'),
    (r'^features\.(\d+)\.global_block\.channel_mlp\.', r'blocks.\1.former.proj.'),
    (r'^features\.(\d+)\.global_block\.layer_norm\.', r'blocks.\1.former.norm1.'),
    (r'^features\.(\d+)\.global_block\.ffn\.0\.', r'blocks.\1.former.fc1.'),
    (r'^features\.(\d+)\.global_block\.ffn\.2\.', r'blocks.\1.former.fc2.'),
    (r'^features\.(\d+)\.global_block\.ffn_norm\.', r'blocks.\1.former.norm2.'),
    (r'^features\.(\d+)\.global_block\.', r'blocks.\1.former.'),
    (r'^features\.(\d+)\.global_local\.proj\.', r'blocks.\1.former_to_mobile.v.'),
    (r'^features\.(\d+)\.global_local\.', r'blocks.\1.former_to_mobile.'),
    (r'^features\.(\d+)\.hyper(\d)\.hyper\.0\.', r'blocks.\1.mobile.act\2.fc1.'),
    (r'^features\.(\d+)\.hyper(\d)\.hyper\.2\.', r'blocks.\1.mobile.act\2.fc2.'),
    (r'^features\.(\d+)\.(conv\d)\.0\.', r'blocks.\1.mobile.\2.conv.'),
    (r'^features\.(\d+)\.(conv\d)\.1\.', r'blocks.\1.mobile.\2.bn.'),
    (r'^local_global\.alpha\.0\.', 'merge.bridge.gate.'),
    (r'^local_global\.layer_norm\.', 'merge.bridge.norm.'),
    (r'^local_global\.', 'merge.bridge.'),
    (r'^classifier\.conv\.1\.', 'merge.conv.conv.'),
    (r'^classifier\.conv\.2\.', 'merge.conv.bn.'),
    (r'^classifier\.fc\.0\.', 'head.pre_logits.fc.'),
    (r'^classifier\.fc\.1\.', 'head.pre_logits.norm.'),
    (r'^classifier\.classifier\.1\.', 'head.fc.'),
)

# the authors' Mobile sub-block names and ours: a Mobile-Former↓ block is the one with a fourth conv
_STANDARD_CONVS = {'conv1': 'conv_pw', 'conv2': 'conv_dw', 'conv3': 'conv_pwl', 'act1': 'act1', 'act2': 'act2'}
_DOWNSAMPLE_CONVS = {'conv1': 'conv_dw1', 'conv2': 'conv_pw1', 'conv3': 'conv_dw2', 'conv4': 'conv_pw2',
                     'act1': 'act1', 'act3': 'act2'}
_MOBILE_KEY = re.compile(r'^blocks\.(\d+)\.mobile\.(\w+)\.(.*)$')

# tensors that timm adapts when loading (classifier for num_classes, stem conv for in_chans), so a
# checkpoint's shapes there don't decide whether it fits
_ADAPTABLE_KEYS = ('head.fc.weight', 'head.fc.bias', 'stem.conv.weight')


def _official_key(key: str) -> str:
    """Map one key of the authors' state dict to this module's name for it."""
    for pattern, repl in _OFFICIAL_KEY_RULES:
        new_key, n = re.subn(pattern, repl, key)
        if n:
            return new_key
    return key


def _from_official(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename the authors' keys to ours; state dicts already in our names pass through unchanged."""
    if not any(k.startswith('features.') for k in state_dict):
        return dict(state_dict)
    renamed = {_official_key(k): v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
    downsample = {m.group(1) for m in map(_MOBILE_KEY.match, renamed) if m and m.group(2) == 'conv4'}
    out = {}
    for key, value in renamed.items():
        m = _MOBILE_KEY.match(key)
        if m:
            names = _DOWNSAMPLE_CONVS if m.group(1) in downsample else _STANDARD_CONVS
            key = f'blocks.{m.group(1)}.mobile.{names.get(m.group(2), m.group(2))}.{m.group(3)}'
        out[key] = value
    return out


def _unwrap(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The weights inside a training-checkpoint envelope, chosen as timm's loaders do (EMA first), without a
    DDP `module.` prefix. timm's own loaders hand the filter an unwrapped dict, which passes through."""
    for envelope in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
        if isinstance(checkpoint.get(envelope), dict):
            checkpoint = checkpoint[envelope]
            break
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in checkpoint.items()}


def _shapes(state_dict: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key → shape of the tensors that decide whether a state dict fits a variant."""
    return {k: tuple(v.shape) for k, v in state_dict.items()
            if torch.is_tensor(v) and not k.endswith('num_batches_tracked') and k not in _ADAPTABLE_KEYS}


@cache
def _variant_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """The deciding shapes of a variant, from a model built on the meta device (no memory, no init)."""
    return _shapes(MobileFormer(**model_cfgs[variant], device='meta').state_dict())


def detect_variant(state_dict: dict[str, Any]) -> Optional[str]:
    """Name the variant (e.g. 'mobileformer_294m') whose tensors these are, authors' or ours; None if none.

    One pass: the keys are converted once and their shapes compared with each variant's.
    """
    shapes = _shapes(_from_official(_unwrap(state_dict)))
    return next((v for v in model_cfgs if _variant_shapes(v) == shapes), None)


def _first_non_finite(state_dict: dict[str, Any]) -> Optional[str]:
    return next((k for k, v in state_dict.items()
                 if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())), None)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: MobileFormer) -> dict[str, torch.Tensor]:
    """Convert the authors' checkpoint (`mobile-former-<v>.pth.tar`) to this model's names.

    Accepts a training-checkpoint envelope (EMA weights first, as timm's loaders choose), a `module.` (DDP)
    prefix, and state dicts already in this model's names, which pass through. Refuses, with a ValueError
    that says what was expected and what was found, weights holding NaN or inf and any checkpoint that does
    not fill this model exactly (another variant, missing or extra tensors). Nothing loads partially.
    """
    state_dict = _unwrap(state_dict)
    bad = _first_non_finite(state_dict)
    if bad is not None:
        raise CheckpointError(f'the checkpoint holds NaN or inf values (first in {bad}): the file is damaged; '
                              f'get a fresh copy. Nothing was loaded.')
    out = _from_official(state_dict)
    expected, found = _shapes(model.state_dict()), _shapes(out)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or reshaped):
        return out
    variant = getattr(model, 'pretrained_cfg', {}).get('architecture', 'this MobileFormer')
    details = [f'{len(keys)} {name} (e.g. {", ".join(keys[:3])})'
               for name, keys in (('missing', missing), ('unexpected', unexpected)) if keys]
    if reshaped:
        details.append(f'{len(reshaped)} of another shape (e.g. {reshaped[0]}: {found[reshaped[0]]})')
    detected = detect_variant(out)
    found_as = f'the checkpoint is {detected}' if detected else 'it matches no Mobile-Former variant'
    raise CheckpointError(
        f'checkpoint does not fit {variant}: {"; ".join(details)}; {found_as}. Load it with the matching '
        f'variant, or check that the file is a Mobile-Former checkpoint. Nothing was loaded.')


def _down(out_chs: int) -> BlockCfg:
    return 'down', 6, out_chs, 2


# The seven variants as the authors' code builds them: (kind, expansion, out_chs, stride) per block.
model_cfgs: dict[str, dict[str, Any]] = dict(
    mobileformer_508m=dict(
        blocks=(('lite', 2, 24, 1), _down(40), ('mf', 3, 40, 1), _down(72), ('mf', 3, 72, 1), _down(128),
                ('mf', 4, 128, 1), ('mf', 6, 176, 1), ('mf', 6, 176, 1), _down(240), ('mf', 6, 240, 1),
                ('mf', 6, 240, 1)),
        stem_chs=24, num_tokens=6, token_dim=192, head_hidden_size=1920,
    ),
    mobileformer_294m=dict(
        blocks=(('lite', 2, 16, 1), _down(24), ('mf', 4, 24, 1), _down(48), ('mf', 4, 48, 1), _down(96),
                ('mf', 4, 96, 1), ('mf', 6, 128, 1), ('mf', 6, 128, 1), _down(192), ('mf', 6, 192, 1),
                ('mf', 6, 192, 1)),
        stem_chs=16, num_tokens=6, token_dim=192, head_hidden_size=1920,
    ),
    mobileformer_214m=dict(
        blocks=(('lite', 2, 12, 1), _down(20), ('mf', 3, 20, 1), _down(40), ('mf', 4, 40, 1), _down(80),
                ('mf', 4, 80, 1), ('mf', 6, 112, 1), ('mf', 6, 112, 1), _down(160), ('mf', 6, 160, 1),
                ('mf', 6, 160, 1)),
        stem_chs=12, num_tokens=6, token_dim=192, head_hidden_size=1600,
    ),
    mobileformer_151m=dict(
        blocks=(('lite', 2, 12, 1), _down(16), ('mf', 3, 16, 1), _down(32), ('mf', 3, 32, 1), _down(64),
                ('mf', 4, 64, 1), ('mf', 6, 88, 1), ('mf', 6, 88, 1), _down(128), ('mf', 6, 128, 1),
                ('mf', 6, 128, 1)),
        stem_chs=12, num_tokens=6, token_dim=192, head_hidden_size=1280,
    ),
    mobileformer_96m=dict(
        blocks=(('lite', 2, 12, 1), _down(16), _down(32), ('mf', 3, 32, 1), _down(64), ('mf', 4, 64, 1),
                ('mf', 6, 88, 1), _down(128), ('mf', 6, 128, 1)),
        stem_chs=12, num_tokens=4, token_dim=128, head_hidden_size=1280,
    ),
    mobileformer_52m=dict(
        blocks=(('lite', 3, 12, 2), ('mf', 3, 12, 1), _down(24), ('mf', 3, 24, 1), _down(48), ('mf', 4, 48, 1),
                ('mf', 6, 64, 1), _down(96), ('mf', 6, 96, 1)),
        stem_chs=8, num_tokens=3, token_dim=128, head_hidden_size=1024,
    ),
)
# 26m is 52m with grouped pointwise convs (4 groups) and channel shuffles
model_cfgs['mobileformer_26m'] = dict(model_cfgs['mobileformer_52m'], pw_groups=4)

# The paper's numbers (abstract and the authors' README agree): params (M), MAdds (M), ImageNet top-1 (%)
paper_results: dict[str, tuple[float, int, float]] = dict(
    mobileformer_508m=(14.0, 508, 79.3),
    mobileformer_294m=(11.4, 294, 77.9),
    mobileformer_214m=(9.4, 214, 76.7),
    mobileformer_151m=(7.6, 151, 75.2),
    mobileformer_96m=(4.6, 96, 72.8),
    mobileformer_52m=(3.5, 52, 68.7),
    mobileformer_26m=(3.2, 26, 64.0),
)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc',
        'paper_ids': 'arXiv:2108.05895',
        'paper_name': 'Mobile-Former: Bridging MobileNet and Transformer',
        'origin_url': 'https://github.com/AAboys/MobileFormer',
        'license': 'apache-2.0',
        **kwargs,
    }


def _in1k_cfg(variant: str) -> dict[str, Any]:
    """The authors' ImageNet-1k weights, converted to safetensors on the Hub (hub.py, RELEASING.md)."""
    top1 = paper_results[variant][2]
    return _cfg(
        hf_hub_id=hub_id(variant),
        hf_hub_filename=WEIGHTS_FILENAME,
        origin_url=AUTHORS_CHECKPOINT_URLS[variant],
        license=WEIGHTS_LICENSE,
        description=f"ImageNet-1k weights trained by the Mobile-Former authors ({authors_filename(variant)}), "
                    f"converted to timm format; paper top-1 {top1}%.",
        notes=(
            f'paper ImageNet-1k top-1: {top1}% (224 px)',
            "the authors released these weights without a license: all rights stay with them; "
            "this package's Apache-2.0 license does not cover them",
        ),
    )


default_cfgs = generate_default_cfgs({
    f'{name}.in1k': _in1k_cfg(name) for name in model_cfgs
})


def _create_mobileformer(variant: str, pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3, 4))
    overlay = kwargs.get('pretrained_cfg_overlay')
    with explain_unreachable_weights(variant, pretrained, kwargs.get('pretrained_cfg'), overlay), \
            allow_checkpoint_globals((overlay or {}).get('file')):
        return build_model_with_cfg(
            MobileFormer,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
            **dict(model_cfgs[variant], **kwargs),
        )


@register_model
def mobileformer_508m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 508M MAdds: 14.0M params, 79.3% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_508m', pretrained, **kwargs)


@register_model
def mobileformer_294m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 294M MAdds: 11.4M params, 77.9% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_294m', pretrained, **kwargs)


@register_model
def mobileformer_214m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 214M MAdds: 9.4M params, 76.7% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_214m', pretrained, **kwargs)


@register_model
def mobileformer_151m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 151M MAdds: 7.6M params, 75.2% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_151m', pretrained, **kwargs)


@register_model
def mobileformer_96m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 96M MAdds: 4.6M params, 72.8% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_96m', pretrained, **kwargs)


@register_model
def mobileformer_52m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 52M MAdds: 3.5M params, 68.7% ImageNet top-1 (paper)."""
    return _create_mobileformer('mobileformer_52m', pretrained, **kwargs)


@register_model
def mobileformer_26m(pretrained: bool = False, **kwargs: Any) -> MobileFormer:
    """Mobile-Former 26M MAdds: 3.2M params, 64.0% ImageNet top-1 (paper); grouped pointwise convs."""
    return _create_mobileformer('mobileformer_26m', pretrained, **kwargs)
