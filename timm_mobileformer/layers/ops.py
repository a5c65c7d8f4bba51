"""The named operations the Mobile-Former model calls, each in its plain form, and the one place that decides
which implementation runs.

The plain forms state the math in plain PyTorch. The eager CPU kernels in `kernels.py` compute the same
faster; they run in eager PyTorch and under `torch.compile`. TorchScript, FX symbolic tracing, `torch.jit`
tracing and `torch.export` / ONNX export get the plain forms, which every exporter and runtime understands.
"""
import torch
from timm.models import register_notrace_function

from . import kernels
from .kernels import pixel_heads

__all__ = [
    'dynamic_relu', 'tokens_read_pixels', 'pixels_read_tokens', 'pixels_add_tokens', 'channel_shuffle',
    'use_eager_kernels', 'use_native_layout_kernels',
    'dynamic_relu_plain', 'tokens_read_pixels_plain', 'pixels_read_tokens_plain', 'channel_shuffle_plain',
    'split_heads', 'merge_heads', 'pixel_heads',
]


def use_eager_kernels() -> bool:
    """True in eager PyTorch and under torch.compile; False while tracing or exporting a graph."""
    return not (torch.jit.is_tracing() or torch.compiler.is_exporting())


def use_native_layout_kernels(x: torch.Tensor) -> bool:
    """The folded convs' CPU kernel choices: eager only, on a channels_last CPU map."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return x.device.type == 'cpu' and not kernels.prefers_nchw(x)


def dynamic_relu_plain(x: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """The two-slope dynamic ReLU, y = max(k1 * x, k2 * x), slopes (B, C, 1, 1) per sample and channel."""
    return torch.maximum(k1 * x, k2 * x)


@register_notrace_function
def dynamic_relu(x: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """max(k1 * x, k2 * x); see dynamic_relu_plain."""
    if not torch.jit.is_scripting():
        if use_eager_kernels():
            return kernels.dynamic_relu(x, k1, k2)
    return dynamic_relu_plain(x, k1, k2)


def tokens_read_pixels_plain(q: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Every token's attention readout of the map x: softmax(q kᵀ * scale) v over the H * W pixels.

    q is (B, heads, M, c); keys and values are the pixels of x itself, its channels split into `heads`
    contiguous groups of c. Returns (B, heads, M, c).
    """
    pixels = pixel_heads(x, q.shape[1]).transpose(-1, -2)  # (B, heads, H * W, c)
    attn = torch.softmax(q @ pixels.transpose(-1, -2) * scale, dim=-1)
    return attn @ pixels


@register_notrace_function
def tokens_read_pixels(q: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Mobile→Former readout; see tokens_read_pixels_plain."""
    if not torch.jit.is_scripting():
        if use_eager_kernels():
            return kernels.tokens_read_pixels(q, x, scale)
    return tokens_read_pixels_plain(q, x, scale)


def pixels_read_tokens_plain(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Every pixel's attention readout of the tokens: softmax(q kᵀ * scale) v over the M tokens.

    The queries are the pixels of x itself (channels split into `heads` groups of c); k and v are
    (B, heads, M, c). Returns the readout shaped like x.
    """
    b, heads, _, c = k.shape
    pixels = pixel_heads(x, heads)  # (B, heads, c, H * W)
    attn = torch.softmax(k @ pixels * scale, dim=-2)  # (B, heads, M, H * W), over the tokens
    return (v.transpose(-1, -2) @ attn).reshape(x.shape)


@register_notrace_function
def pixels_read_tokens(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Former→Mobile readout; see pixels_read_tokens_plain."""
    if not torch.jit.is_scripting():
        if use_eager_kernels():
            return kernels.pixels_read_tokens(x, k, v, scale, add=False)
    return pixels_read_tokens_plain(x, k, v, scale)


@register_notrace_function
def pixels_add_tokens(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """x + its Former→Mobile readout; the eager kernel folds the residual add into its last matmul."""
    if not torch.jit.is_scripting():
        if use_eager_kernels():
            return kernels.pixels_read_tokens(x, k, v, scale, add=True)
    return x + pixels_read_tokens_plain(x, k, v, scale)


def channel_shuffle_plain(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: view the channels as (groups, C // groups), transpose, flatten."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle; torch's native kernel (one copy, keeps channels_last) in eager PyTorch. Graph captures
    get the plain form: the native op's fake-tensor strides disagree with its output on channels_last input."""
    if not torch.jit.is_scripting():
        if torch.compiler.is_compiling() or not use_eager_kernels():
            return channel_shuffle_plain(x, groups)
    return torch.nn.functional.channel_shuffle(x, groups)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads), channels split into contiguous groups."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, c) -> (B, N, heads * c)."""
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)
