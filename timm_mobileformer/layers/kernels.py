"""Eager CPU kernels for Mobile-Former's operations, each computing what its plain form in `ops.py` computes.

They pick the fastest of torch's kernels for the layouts and sizes Mobile-Former meets on a CPU: the
dynamic ReLU as a prelu with its own backward, the bridges read in place from NCHW or channels_last maps,
the channel shuffle as torch's native op. `ops.py` decides when they run; `tests/test_layers.py` checks each
against its plain form, values and gradients.
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ['dynamic_relu', 'tokens_read_pixels', 'pixels_read_tokens', 'pixel_heads', 'prefers_nchw']


def prefers_nchw(x: torch.Tensor) -> bool:
    """Whether a map is (or is best read as) NCHW: contiguous, or in no layout torch knows better."""
    return x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)


def pixel_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, C // heads, H * W): a view of a contiguous NCHW map, a copy otherwise."""
    b, c, h, w = x.shape
    return x.reshape(b, num_heads, c // num_heads, h * w)


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1. else x * scale


class _DynamicReLUFunction(torch.autograd.Function):
    """kpos * prelu(x, kneg / kpos) with its own backward: autograd's would run prelu's backward, which writes
    a per-element slope gradient and broadcasts per-sample slopes slowly, then a multiply's backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kpos: torch.Tensor, kneg: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, kpos, kneg)
        return torch._prelu_kernel(x, kneg / kpos).mul_(kpos)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slope gradients as sums of grad * x over the pixels where x > 0 and over all; one scratch buffer
        serves every full-size product (fresh large buffers cost page faults)."""
        x, kpos, kneg = ctx.saved_tensors
        grad_pos = torch.ops.aten.threshold_backward(grad, x, 0.)  # grad where x > 0, else 0
        scratch = torch.mul(grad_pos, x)
        d_pos = scratch.sum((2, 3), keepdim=True)
        d_neg = torch.mul(grad, x, out=scratch).sum((2, 3), keepdim=True) - d_pos
        grad_x = grad_pos.mul_(kpos - kneg).add_(torch.mul(grad, kneg, out=scratch))
        return grad_x, d_pos, d_neg


def dynamic_relu(x: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, min_slope: float = 1e-12) -> torch.Tensor:
    """max(k1 * x, k2 * x) as kpos * prelu(x, kneg / kpos): two passes over x instead of three (the second in
    place when nothing needs its input), and with autograd a backward of a few plain passes instead of
    `maximum`'s tie handling. kpos is floored at `min_slope` so kneg / kpos stays finite (where kpos is 0
    that leaves 1e-12 * x for x > 0). At the measure-zero ties (x == 0) the gradient is kneg's."""
    kpos = torch.maximum(k1, k2).clamp_min(min_slope)
    kneg = torch.minimum(k1, k2)
    if torch.is_grad_enabled():
        return _DynamicReLUFunction.apply(x, kpos, kneg)
    return torch._prelu_kernel(x, kneg / kpos).mul_(kpos)


def tokens_read_pixels(q: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """The Mobile→Former readout read in place: an NCHW map by two matmuls (scale on the small q, not on the
    scores), a channels_last map, already pixel-major, by scaled_dot_product_attention."""
    if prefers_nchw(x):
        pixels = pixel_heads(x, q.shape[1])
        return torch.softmax(_scaled(q, scale) @ pixels, dim=-1) @ pixels.transpose(-1, -2)
    b, heads, _, c = q.shape
    pixels = x.permute(0, 2, 3, 1).reshape(b, -1, heads, c).transpose(1, 2)
    return F.scaled_dot_product_attention(q, pixels, pixels, scale=scale)


def pixels_read_tokens(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, add: bool) -> torch.Tensor:
    """The Former→Mobile readout read in place. On an NCHW map both matmuls run per head on x viewed
    (B * heads, c, H * W), the softmax runs over a short strided axis and the residual add rides on the
    second matmul. A channels_last map is read as one (H * W, C) matrix per image, with the heads as
    block-diagonal keys and values: twice the (small) attention MAdds, but no transposed copy of the map."""
    b, heads, m, c = k.shape
    if prefers_nchw(x):
        pixels = x.reshape(b * heads, c, -1)
        attn = torch.softmax(torch.bmm(_scaled(k, scale).reshape(b * heads, m, c), pixels), dim=-2)
        v_t = v.reshape(b * heads, m, c).transpose(1, 2)
        out = torch.baddbmm(pixels, v_t, attn) if add else torch.bmm(v_t, attn)
        return out.reshape(x.shape)
    blocks = torch.eye(heads, dtype=k.dtype, device=k.device).reshape(1, heads, 1, heads, 1)
    k_bd = (_scaled(k, scale).unsqueeze(3) * blocks).reshape(b, heads * m, heads * c)
    v_bd = (v.unsqueeze(3) * blocks).reshape(b, heads * m, heads * c)
    pixels = x.permute(0, 2, 3, 1).reshape(b, -1, heads * c)  # a view: (B, H * W, C)
    attn = torch.softmax(torch.bmm(k_bd, pixels.transpose(1, 2)).reshape(b, heads, m, -1), dim=-2)
    attn_t = attn.reshape(b, heads * m, -1).transpose(1, 2)
    out = torch.baddbmm(pixels, attn_t, v_bd) if add else torch.bmm(attn_t, v_bd)
    return out.reshape(b, x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)
