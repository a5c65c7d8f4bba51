"""One way to read Mobile-Former weights from a local file, used by every command and builder.

`read_state_dict` reads a checkpoint file: the authors' `mobile-former-<v>.pth.tar`, a timm `train.py`
checkpoint, or a converted `model.safetensors`. It is timm's `load_state_dict` under
`torch.load(weights_only=True)` with the harmless globals of `pickles.py` allowed, and it turns every
failure into a one-line `CheckpointError`. `checkpoint_filter_fn` (in the model file) then maps the authors'
names and checks that the tensors fill the model exactly and are finite, on this path and on timm's own
(`pretrained_cfg_overlay=dict(file=...)`, `local-dir:`, `hf-hub:`).

The rule for a checkpoint that holds both `state_dict` and `state_dict_ema` (train.py with `--model-ema`)
is timm's: the EMA weights, unless `use_ema=False`. timm's `load_state_dict`, `load_checkpoint` and
`pretrained_cfg_overlay=dict(file=...)` choose the same way.
"""
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
from timm.models import is_model, list_pretrained, load_state_dict

from .errors import CheckpointError, MobileFormerError
from .mobileformer import MobileFormer, checkpoint_filter_fn, detect_variant, model_cfgs
from .pickles import allow_checkpoint_globals, refused_global, unsafe_message

__all__ = [
    'VARIANTS', 'resolve_model_name', 'read_state_dict', 'detect_variant', 'load_checkpoint',
    'checkpoint_overlay', 'create_from_checkpoint',
]

PathLike = Union[str, Path]
VARIANTS = tuple(model_cfgs)


def resolve_model_name(name: str) -> str:
    """'294m', 'mobileformer_294m' or 'mobileformer_294m.in1k' → the timm model name, tag kept.

    Anything else is a MobileFormerError that lists the choices.
    """
    base, dot, tag = name.strip().partition('.')
    variant = base if base.startswith('mobileformer_') else f'mobileformer_{base}'
    if variant not in model_cfgs:
        short = ', '.join(v.split('_', 1)[1] for v in VARIANTS)
        raise MobileFormerError(f"unknown model '{name}': choose one of {short} (or mobileformer_<v>, "
                                f'optionally with a tag such as .in1k)')
    if not dot:
        return variant
    full = f'{variant}.{tag}'
    if not is_model(variant) or full not in list_pretrained(f'{variant}.*'):
        raise MobileFormerError(f"unknown tag '{tag}' for {variant}: choose one of "
                                f"{', '.join(list_pretrained(f'{variant}.*')) or 'none'}")
    return full


def _corrupt_message(path: Path, err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    detail = lines[0].split('. ')[0][:120] if lines else ''  # the first sentence says enough
    reason = f'{type(err).__name__}: {detail}' if detail else type(err).__name__
    return f'{path}: not a readable checkpoint ({reason}): the file is truncated or corrupt; get a fresh copy'


def read_state_dict(path: PathLike, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights in a local checkpoint file, keys as stored (authors' or ours), on the CPU.

    EMA weights when the file has them, unless `use_ema=False`. Raises CheckpointError for a missing,
    empty, damaged or unsafe file, or one that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such file: check the path')
    if path.stat().st_size == 0:
        raise CheckpointError(f'{path}: the file is empty: get a fresh copy')
    try:
        with allow_checkpoint_globals():
            state_dict = load_state_dict(str(path), use_ema=use_ema, weights_only=True)
    except AttributeError as err:  # timm cleans whatever the pickle held as if it were a dict
        raise CheckpointError(f'{path}: holds no state dict: pass an authors\' mobile-former-<v>.pth.tar, a '
                              f'train.py checkpoint or a converted model.safetensors') from err
    except Exception as err:  # torch, timm and safetensors report damage with many exception types
        blocked = refused_global(err)
        raise CheckpointError(unsafe_message(path, blocked) if blocked else _corrupt_message(path, err)) from err
    if not state_dict or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise CheckpointError(f'{path}: holds no state dict of tensors: pass an authors\' mobile-former-<v>.pth.tar, '
                              f'a train.py checkpoint or a converted model.safetensors')
    return state_dict


def _filter(state_dict: dict[str, Any], model: MobileFormer, path: Path) -> dict[str, torch.Tensor]:
    try:
        return checkpoint_filter_fn(state_dict, model)
    except CheckpointError as err:
        raise CheckpointError(f'{path}: {err}') from err


def _load_filtered(model: MobileFormer, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Strictly load a filtered state dict; a classifier or stem of another size is said plainly."""
    expected = model.state_dict()
    for key, arg in (('head.fc.weight', 'num_classes'), ('stem.conv.weight', 'in_chans')):
        if key in state_dict and key in expected and state_dict[key].shape != expected[key].shape:
            raise CheckpointError(
                f'{path}: {key} has shape {tuple(state_dict[key].shape)}, the model has '
                f'{tuple(expected[key].shape)}: build the model with {arg} to match, or use '
                f'create_from_checkpoint, which reads it from the file. Nothing was loaded.')
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(model: MobileFormer, path: PathLike, use_ema: bool = True) -> MobileFormer:
    """Load a local checkpoint into `model`, all tensors or none, and return the model."""
    path = Path(path)
    _load_filtered(model, _filter(read_state_dict(path, use_ema), model, path), path)
    return model


def checkpoint_overlay(path: PathLike, use_ema: bool = True) -> dict[str, Any]:
    """A `pretrained_cfg_overlay` that makes timm load a local checkpoint read by `read_state_dict`, for the
    builds where timm's own loading does more than ours (features_only, another num_classes or in_chans):
    `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=checkpoint_overlay(path))`."""
    return dict(state_dict=read_state_dict(path, use_ema))


def create_from_checkpoint(
        path: PathLike,
        model_name: Optional[str] = None,
        use_ema: bool = True,
        **kwargs: Any,
) -> MobileFormer:
    """The model a local checkpoint holds, in eval mode: the variant detected from its tensors (or given as
    `model_name`), the number of classes and input channels read from its classifier and stem; kwargs go to
    timm.create_model.
    """
    path = Path(path)
    name = resolve_model_name(model_name) if model_name else None  # a typo fails before a long read
    state_dict = read_state_dict(path, use_ema)
    name = name or detect_variant(state_dict)
    if name is None:
        raise CheckpointError(f'{path}: its tensors fit no Mobile-Former variant: pass a Mobile-Former '
                              f'checkpoint, or name the variant with --model to see what differs')
    converted = _filter(state_dict, timm.create_model(name, device='meta'), path)
    head, stem = converted.get('head.fc.weight'), converted.get('stem.conv.weight')
    sizes = dict(num_classes=head.shape[0] if head is not None else 0,
                 in_chans=stem.shape[1] if stem is not None else 3)
    model = timm.create_model(name, **{**sizes, **kwargs})
    _load_filtered(model, converted, path)
    return model.eval()
