"""The authors' network as test data: seeded weights in the authors' key layout, and golden outputs.

The golden files (`data/golden/mobileformer_<v>.safetensors`) hold what the authors' own code produced for
seeded weights: the BatchNorm running statistics it ended with, its logits for two fixed inputs, the key
shapes, and a fingerprint of the seeded weights. The weights themselves are regenerated from a rule (one
seed per key), so any variant's authors'-format state dict can be built from
`data/official_state_dict_keys.json`.
"""
import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

DATA = Path(__file__).parent / 'data'
GOLDEN_VARIANTS = ('294m', '52m')


def seeded_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic weights for one key: He-scaled convs, 1/sqrt(fan_in) linears, N(0, 1) tokens."""
    g = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    if len(shape) == 4:
        return torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
    if len(shape) == 2:
        scale = 1.0 if key.startswith('tokens') else 1.0 / math.sqrt(shape[1])
        return torch.randn(shape, generator=g) * scale
    if key.endswith('weight'):
        return 0.75 + 0.5 * torch.rand(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def official_keys(variant: str) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' state dict for a variant ('294m', ...) and its shape."""
    return {k: tuple(v) for k, v in json.loads((DATA / 'official_state_dict_keys.json').read_text())[variant].items()}


def seeded_state_dict(variant: str, bn_stats: dict[str, torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """An authors'-format state dict of seeded weights; BN running stats from bn_stats or seeded."""
    sd = {}
    for key, shape in sorted(official_keys(variant).items()):
        if key.endswith('num_batches_tracked'):
            sd[key] = torch.tensor(0, dtype=torch.long)
        elif bn_stats is not None and key.endswith(('running_mean', 'running_var')):
            sd[key] = bn_stats[key]
        elif key.endswith('running_var'):
            sd[key] = 0.5 + seeded_tensor(key, shape).abs()
        else:
            sd[key] = seeded_tensor(key, shape)
    return sd


def golden_inputs() -> dict[str, torch.Tensor]:
    """The two inputs the golden logits were computed for."""
    g = torch.Generator().manual_seed(1234)
    return {'x224': torch.randn(2, 3, 224, 224, generator=g), 'x256x192': torch.randn(2, 3, 256, 192, generator=g)}


def official_state_dict(variant: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(authors'-format state dict, {input name: the authors' logits}) for a variant with a golden file."""
    with safe_open(str(DATA / 'golden' / f'mobileformer_{variant}.safetensors'), 'pt') as f:
        meta = f.metadata()
        stored = {k: f.get_tensor(k) for k in f.keys()}
    bn_stats = {k[len('bn.'):]: v for k, v in stored.items() if k.startswith('bn.')}
    sd = seeded_state_dict(variant, bn_stats)
    fingerprint = sum(float(v.double().abs().sum()) for k, v in sd.items()
                      if not k.endswith(('num_batches_tracked', 'running_mean', 'running_var')))
    if abs(fingerprint - float(meta['fingerprint'])) > 1e-6 * float(meta['fingerprint']):
        raise RuntimeError(f'seeded weights do not regenerate on this torch ({fingerprint} vs {meta["fingerprint"]})')
    expected = {k[len('out.'):]: v for k, v in stored.items() if k.startswith('out.')}
    return sd, expected
