"""What the global tokens see: the bridges' cross-attention maps, as an API and as a picture.

`record_attention(model)` is a context manager that captures, during any forward pass inside it, the
Mobile→Former attention of every token over every bridge's feature map and the Former→Mobile attention
of every pixel over the tokens. It registers forward pre-hooks on the bridges on entry and removes them on
exit, so the model's forward is untouched and costs nothing extra when no one is recording.

`timm-mobileformer attention IMAGE --out FILE.png` draws those maps as a grid (one row per block, one
column per token) overlaid on the image, in the spirit of the paper's Fig. 6.
"""
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from timm.data import create_transform, resolve_data_config

from .errors import MobileFormerError, one_line
from .hub import WeightsUnreachableError
from .layers.fused import FusedFormerToMobile, FusedMobileToFormer
from .mobileformer import FormerToMobile, MobileFormer, MobileFormerBlock, MobileToFormer
from .predict import labeller, load_model, read_image

__all__ = ['TokenAttention', 'record_attention', 'token_attention', 'render_attention_grid', 'GridLayout',
           'RandomWeightsWarning']

MERGE = 'merge'
RANDOM_NOTE = 'RANDOM INIT, no trained weights: the maps show the untrained network, not learnt semantics'


class RandomWeightsWarning(UserWarning):
    """The Hub weights were unreachable, so the attention is drawn with random weights."""


@dataclass
class TokenAttention:
    """Attention maps of one forward pass, keyed by the name of the module that owns the bridge.

    For a `MobileFormer` the keys are `'blocks.<i>'` for each Mobile-Former block and `'merge'` for the
    final Mobile→Former bridge ahead of the classifier (Mobile→Former only). Each map is
    (B, heads, M, H, W) at the resolution of the feature map the bridge reads:

    - `mobile_to_former`: token m's softmax over the pixels of the block's *input* map; sums to 1 over (H, W).
    - `former_to_mobile`: each pixel of the block's *Mobile output* map over the tokens; sums to 1 over M.
    """
    mobile_to_former: dict[str, torch.Tensor] = field(default_factory=dict)
    former_to_mobile: dict[str, torch.Tensor] = field(default_factory=dict)


def _owner(name: str) -> str:
    """'blocks.3.mobile_to_former' -> 'blocks.3'; 'merge.bridge' -> 'merge'."""
    return name.rpartition('.')[0]


def _record_hook(store: dict[str, torch.Tensor], key: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: recompute the bridge's explicit attention from its inputs and keep it as a map."""
    inputs = dict(zip(('x', 'tokens'), args), **kwargs)
    x = inputs['x']
    store[key] = module.attention(x, inputs['tokens']).unflatten(-1, x.shape[-2:])


@contextmanager
def record_attention(model: nn.Module) -> Iterator[TokenAttention]:
    """Record the bridges' attention maps of every forward pass run inside the `with` block.

    Works on any module holding Mobile-Former bridges (a classifier, a `features_only` model, a detection
    backbone). The maps are computed under the caller's grad mode; a bridge called twice in one pass (e.g.
    gradient checkpointing's recompute) keeps its last call. Hooks are removed on exit, even on error.

        with record_attention(model) as attn:
            logits = model(images)
        attn.mobile_to_former['blocks.3']  # (B, heads, M, H, W)
    """
    maps = TokenAttention()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (MobileToFormer, FusedMobileToFormer)):
            store = maps.mobile_to_former
        elif isinstance(module, (FormerToMobile, FusedFormerToMobile)):
            store = maps.former_to_mobile
        else:
            continue
        handles.append(module.register_forward_pre_hook(partial(_record_hook, store, _owner(name)), with_kwargs=True))
    if not handles:
        raise ValueError(f'{type(model).__name__} holds no Mobile-Former bridges; nothing to record.')
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def token_attention(model: nn.Module, x: torch.Tensor) -> tuple[Any, TokenAttention]:
    """Run `model(x)` once and return its output together with every bridge's attention maps."""
    with record_attention(model) as maps:
        out = model(x)
    return out, maps


def default_blocks(model: MobileFormer) -> list[str]:
    """The last Mobile-Former block of each stride and the final bridge: one row per resolution."""
    last_blocks = [end - 1 for end in model.stage_ends if end > 0]
    return [f'blocks.{i}' for i in last_blocks if isinstance(model.blocks[i], MobileFormerBlock)] + [MERGE]


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the attention grid; `size` gives the canvas for a number of rows and columns."""
    cell: int = 128
    gap: int = 4
    label_h: int = 16
    row_label_w: int = 76
    title_lines: int = 3
    line_h: int = 16

    @property
    def title_h(self) -> int:
        return self.title_lines * self.line_h + self.gap

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        width = self.row_label_w + cols * (self.cell + self.gap)
        height = self.title_h + rows * (self.label_h + self.cell + self.gap)
        return width, height

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of a cell's label band; the map sits `label_h` below it."""
        x = self.row_label_w + col * (self.cell + self.gap)
        return x, self.title_h + row * (self.label_h + self.cell + self.gap)


# jet-like colour ramp, dark blue (low) to dark red (high)
_RAMP = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], dtype=np.float32)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 through the colour ramp."""
    pos = np.linspace(0, 1, len(_RAMP))
    rgb = [np.interp(values, pos, _RAMP[:, c]) for c in range(3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def overlay(image: Image.Image, attn: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """Upsample one (H, W) map to the image, scale it to its own [min, max] and blend it over the image."""
    up = F.interpolate(attn[None, None].float(), size=image.size[::-1], mode='bilinear', align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
    heat = Image.fromarray(colorize(up.cpu().numpy()))
    return Image.blend(image.convert('RGB'), heat, alpha)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.ImageFont, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to a pixel width; the last allowed line is cut with an ellipsis if needed."""
    chars = max(8, int(width / max(font.getlength('x'), 1)))
    lines = []
    for paragraph in text.split('\n'):
        lines += textwrap.wrap(paragraph, chars) or ['']
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:max(chars - 3, 1)].rstrip() + '...'
    return lines


def _row_name(key: str) -> str:
    return 'merge' if key == MERGE else f'block {key.rpartition(".")[2]}'


def render_attention_grid(
        image: Image.Image,
        maps: dict[str, torch.Tensor],
        rows: Sequence[str],
        title: str,
        uniform_over: str = 'pixels',
        per_head: bool = False,
        layout: GridLayout = GridLayout(),
) -> Image.Image:
    """One row per key in `rows`, one column per token (per token and head with `per_head`).

    `maps[key]` is (heads, M, H, W) for one image. Each cell is scaled to its own range; its corner shows
    the peak as a multiple of the uniform value (1/(H*W) over 'pixels', 1/M over 'tokens'), so that a flat
    map is told apart from a peaked one.
    """
    num_heads, num_tokens = maps[rows[0]].shape[:2]
    cols = num_tokens * num_heads if per_head else num_tokens
    canvas = Image.new('RGB', layout.size(len(rows), cols), 'white')
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.line_h - 4)
    for i, line in enumerate(_wrap(title, font, canvas.width - 2 * layout.gap, layout.title_lines)):
        draw.text((layout.gap, layout.gap + i * layout.line_h), line, fill='black', font=font)
    base = image.convert('RGB').resize((layout.cell, layout.cell), Image.BILINEAR)
    for r, key in enumerate(rows):
        attn = maps[key].float()
        height, width = attn.shape[-2:]
        cells = attn.permute(1, 0, 2, 3).reshape(cols, height, width) if per_head else attn.mean(0)
        uniform = height * width if uniform_over == 'pixels' else num_tokens
        _, y = layout.cell_origin(r, 0)
        draw.text((layout.gap, y + layout.label_h + layout.cell // 2 - 16),
                  f'{_row_name(key)}\n{height}x{width} map', fill='black', font=font)
        for c in range(cols):
            x, y = layout.cell_origin(r, c)
            token, head = divmod(c, num_heads) if per_head else (c, None)
            label = f'{_row_name(key)} · ' + (f't{token} · h{head}' if per_head else f'token {token}')
            draw.text((x, y + 1), label, fill='black', font=font)
            canvas.paste(overlay(base, cells[c]), (x, y + layout.label_h))
            peak = f'peak {cells[c].max().item() * uniform:.2f}x'
            draw.text((x + 3, y + layout.label_h + layout.cell - layout.line_h), peak, fill='white', font=font,
                      stroke_width=2, stroke_fill='black')
    return canvas


def load_with_note(variant: Optional[str] = None, checkpoint: Optional[str] = None, random_init: bool = False,
                   use_ema: bool = True) -> tuple[nn.Module, str]:
    """`predict.load_model`'s classifier and a note on its weights for the title: a local file, else the Hub,
    else random init.

    Unreachable Hub weights fall back to random init with a `RandomWeightsWarning`, since the picture is still
    worth drawing; the returned note says so.
    """
    if checkpoint:
        return load_model(variant, checkpoint, use_ema), f'weights: {checkpoint}'
    if random_init:
        return load_model(variant, random_init=True), RANDOM_NOTE
    try:
        model = load_model(variant)
    except WeightsUnreachableError as err:
        warnings.warn(f'{one_line(err)} Drawing with random weights instead.', RandomWeightsWarning, stacklevel=2)
        return load_model(variant, random_init=True), f'Hub weights unreachable, so {RANDOM_NOTE}'
    cfg = model.pretrained_cfg
    return model, f"weights: {cfg.get('hf_hub_id') or cfg.get('url')}"


def prepare_image(model: nn.Module, path: str) -> tuple[torch.Tensor, Image.Image]:
    """The model's eval input for an image file, and that same crop as a picture (mean/std undone)."""
    config = resolve_data_config(model=model)
    x = create_transform(**config)(read_image(path)).unsqueeze(0)
    mean = torch.tensor(config['mean']).view(3, 1, 1)
    std = torch.tensor(config['std']).view(3, 1, 1)
    pixels = ((x[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return x, Image.fromarray(pixels)


def parse_blocks(requested: Sequence[str], model: MobileFormer, available: Sequence[str]) -> list[str]:
    """Turn `--blocks` (block indices, 'merge' or 'all') into map keys, failing with the valid choices."""
    if not requested:
        return [k for k in default_blocks(model) if k in available]
    if list(requested) == ['all']:
        return list(available)
    keys = [MERGE if b == MERGE else f'blocks.{b}' for b in requested]
    unknown = [k for k in keys if k not in available]
    if unknown:
        choices = ', '.join(k.rpartition('.')[2] for k in available)
        raise MobileFormerError(f'no bridge at {", ".join(unknown)}: choose from {choices}, or all')
    return keys


def bridge_keys(model: MobileFormer, bridge: str = 'm2f') -> list[str]:
    """The map keys a forward pass records for `bridge` ('m2f' or 'f2m'), known before running it."""
    keys = [f'blocks.{i}' for i, block in enumerate(model.blocks) if isinstance(block, MobileFormerBlock)]
    return keys + [MERGE] if bridge == 'm2f' else keys


def draw_attention(
        image_path: str,
        model_name: Optional[str] = None,
        checkpoint: Optional[str] = None,
        random_init: bool = False,
        blocks: Optional[Sequence[str]] = None,
        bridge: str = 'm2f',
        per_head: bool = False,
        cell_size: int = 128,
        use_ema: bool = True,
) -> tuple[Image.Image, str, list[str]]:
    """The attention grid of one image: (picture, title, row keys). Bad blocks and images fail before the
    model runs."""
    if bridge not in ('m2f', 'f2m'):
        raise MobileFormerError(f"unknown bridge {bridge}: choose m2f or f2m")
    read_image(image_path)  # a bad image fails before the model is built
    model, source = load_with_note(model_name, checkpoint, random_init, use_ema)
    rows = parse_blocks(blocks, model, bridge_keys(model, bridge))
    x, picture = prepare_image(model, image_path)
    with torch.inference_mode():
        logits, attn = token_attention(model, x)
    maps = attn.mobile_to_former if bridge == 'm2f' else attn.former_to_mobile
    prob, idx = logits.softmax(-1)[0].max(0)
    top1 = labeller(logits.shape[-1])(idx.item())
    top1 = top1[1] or top1[0]
    direction = 'Mobile->Former: each token over the pixels' if bridge == 'm2f' else \
        'Former->Mobile: each pixel over the tokens'
    heads = 'per head' if per_head else 'heads averaged'
    variant = model.pretrained_cfg.get('architecture', model_name)
    title = (f'{variant}: top-1 {top1} ({prob.item():.1%})\n'
             f'{direction}, {heads}; {source}')
    grid = render_attention_grid(
        picture, {k: v[0] for k, v in maps.items()}, rows, title,
        uniform_over='pixels' if bridge == 'm2f' else 'tokens', per_head=per_head,
        layout=GridLayout(cell=cell_size))
    return grid, title, rows


def save_png(grid: Image.Image, path) -> None:
    """The grid as a palette PNG (small); `path` may be a staging name, the format is always PNG."""
    grid.quantize(256).save(path, format='PNG', optimize=True)
