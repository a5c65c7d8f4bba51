"""The weight-level folds of Mobile-Former's inference and runtime forms, written once: each returns the detached
tensors of a layer that computes, in eval mode, what a plain part computes.

`fused.py` builds the eager inference forms from them, and every runtime form (`deploy/`) builds its layers
from them too, so a fold is derived in one place only. The plain parts are read by their attribute names
(timm's ConvNormAct: `.conv`, `.bn`; MobileToFormer: `.q`, `.gate`, `.scale`), so this file does not import
the model file.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = [
    'conv_norm_weights', 'hard_sigmoid_weights', 'scaled_weights', 'linear_norm_weights', 'shuffle_perm',
    'inverse_perm', 'take', 'dense_weight', 'learned_token_queries', 'learned_token_gate',
]

Weights = tuple[torch.Tensor, torch.Tensor]


def conv_norm_weights(conv_norm: nn.Module) -> Weights:
    """(weight, bias) of one conv computing timm's ConvNormAct (conv, then eval BatchNorm) before its activation."""
    conv, bn = conv_norm.conv, conv_norm.bn
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
    return weight.detach(), bias.detach()


def hard_sigmoid_weights(linear: nn.Linear) -> Weights:
    """(weight, bias) such that clamp(x W^T + b, 0, 2) == 2 * hardsigmoid(linear(x)):
    2 * clamp(z / 6 + 1 / 2, 0, 1) = clamp(z / 3 + 1, 0, 2)."""
    third = 1. / 3.
    return (linear.weight * third).detach(), (linear.bias * third + 1.).detach()


def scaled_weights(linear: nn.Linear, scale: float) -> Weights:
    """(weight, bias) of `linear` with its output multiplied by `scale` (an attention scale folded in)."""
    return (linear.weight * scale).detach(), (linear.bias * scale).detach()


def linear_norm_weights(fc: nn.Linear, norm: nn.BatchNorm1d) -> Weights:
    """(weight, bias) of one linear computing norm(fc(x)) with the BatchNorm1d in eval mode."""
    weight, bias = fuse_linear_bn_weights(fc.weight, fc.bias, norm.running_mean, norm.running_var, norm.eps,
                                          norm.weight, norm.bias)
    return weight.detach(), bias.detach()


def shuffle_perm(channels: int, groups: int) -> torch.Tensor:
    """The permutation of a channel shuffle: y = channel_shuffle(x, groups) is y[:, i] = x[:, perm[i]]."""
    return torch.arange(channels).reshape(groups, channels // groups).t().reshape(-1)


def inverse_perm(perm: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes `perm`: inverse_perm(perm)[perm] is the identity."""
    return torch.argsort(perm)


def take(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """t.index_select(dim, index), where an index of -1 gives zeros (a padding channel); detached."""
    t = t.detach()
    shape = list(t.shape)
    shape[dim] = len(index)
    keep = index >= 0
    return t.new_zeros(shape).index_copy_(dim, keep.nonzero().squeeze(1), t.index_select(dim, index[keep]))


def dense_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weight (O, I, k, k) of a grouped conv's weight (O, I / groups, k, k): block-diagonal; detached.
    A permutation of its rows or columns then folds a channel shuffle next to the conv."""
    weight = weight.detach()
    if groups == 1:
        return weight
    out_chs, in_per_group, kh, kw = weight.shape
    out_per_group = out_chs // groups
    dense = weight.new_zeros(out_chs, in_per_group * groups, kh, kw)
    for g in range(groups):
        rows, cols = slice(g * out_per_group, (g + 1) * out_per_group), slice(g * in_per_group, (g + 1) * in_per_group)
        dense[rows, cols] = weight[rows]
    return dense


def learned_token_queries(bridge: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A Mobile→Former bridge's queries of the learned tokens (M, d), its attention scale folded in: (M, C).
    The first Mobile-Former block reads the learned tokens, so a runtime form holds these as constants."""
    with torch.no_grad():
        return F.linear(tokens.detach(), *scaled_weights(bridge.q, bridge.scale))


def learned_token_gate(bridge: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A Mobile→Former bridge's gate, 2 * hardsigmoid(gate(tokens)), of the learned tokens (M, d): (M, C)."""
    with torch.no_grad():
        return F.linear(tokens.detach(), *hard_sigmoid_weights(bridge.gate)).clamp(0., 2.)
