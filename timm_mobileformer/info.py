"""`timm-mobileformer info`: build every variant and measure it live, beside the paper's numbers."""
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .mobileformer import model_cfgs, paper_results

VARIANTS: tuple[str, ...] = tuple(model_cfgs)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of scaled_dot_product_attention as its two matmuls (FlopCounterMode has none on CPU)."""
    *batch, m, d = query_shape
    n, dv = key_shape[-2], value_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * m * n * d + 2 * b * m * n * dv


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_madds(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-adds of conv, linear and matmul for one image: FlopCounterMode's total / 2."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    x = torch.randn(1, *input_size)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:  # not no_grad: see module tracker
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure(variant: str, img_size: int = 224) -> dict[str, Any]:
    """Params, MAdds, logits shape and feature-map strides of one variant, measured on a fresh model."""
    model = timm.create_model(variant).eval()
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_intermediates(x, intermediates_only=True)
    paper_params, paper_madds, paper_top1 = paper_results[variant]
    return dict(
        variant=variant,
        params=count_params(model),
        madds=count_madds(model, (3, img_size, img_size)),
        output_shape=tuple(logits.shape),
        feature_strides=[img_size // f.shape[-1] for f in features],
        feature_channels=[f.shape[1] for f in features],
        paper_params_m=paper_params,
        paper_madds_m=paper_madds,
        paper_top1=paper_top1,
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ('variant', 'params', 'MAdds (M)', 'output', 'feature strides', 'paper params', 'paper MAdds',
              'paper top-1')
    lines = [header]
    for r in rows:
        lines.append((
            r['variant'], f"{r['params']:,}", f"{r['madds'] / 1e6:.2f}", str(r['output_shape']),
            '/'.join(str(s) for s in r['feature_strides']), f"{r['paper_params_m']}M", f"{r['paper_madds_m']}M",
            f"{r['paper_top1']}%",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ['  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(out)
