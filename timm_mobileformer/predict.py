"""Classify images with the weights' own preprocessing: top-k classes with names.

The model comes from the Hub (`pretrained=True`), or from any checkpoint `create_from_checkpoint` reads
(the authors' file, a converted folder's model.safetensors, a timm `train.py` checkpoint with its own number
of classes). ImageNet-1k checkpoints get ImageNet's class names; others get the names the user gives, else
`class <i>`.
"""
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional, Union

import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from .errors import MobileFormerError
from .mobileformer import MobileFormer
from .weights import create_from_checkpoint, resolve_model_name

DEFAULT_VARIANT = 'mobileformer_294m'
TOP_K = 5

# (probability, class index) pairs, best first
Prediction = list[tuple[float, int]]
# class index -> (label, description)
Labeller = Callable[[int], tuple[str, str]]


class ImageReadError(MobileFormerError, ValueError):
    """An image file that can't be read, said in one line."""


def load_model(variant: Optional[str] = None, checkpoint: Optional[str] = None, use_ema: bool = True,
               random_init: bool = False) -> MobileFormer:
    """The model in eval mode: from a local checkpoint if given, else the Hub weights (or random weights)."""
    if checkpoint:
        return create_from_checkpoint(checkpoint, variant, use_ema)
    name = resolve_model_name(variant or DEFAULT_VARIANT)
    if random_init:
        return timm.create_model(name.partition('.')[0]).eval()
    return timm.create_model(name, pretrained=True).eval()


def read_image(path: Union[str, Path]) -> Image.Image:
    """An RGB image; a missing, damaged or oversized (decompression bomb) file is an ImageReadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert('RGB')
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f'{path}: refused: the image has more pixels than PIL safely opens '
                             f'({Image.MAX_IMAGE_PIXELS} pixels), a possible decompression bomb; pass a smaller '
                             f'image') from err
    except FileNotFoundError as err:
        raise ImageReadError(f'{path}: no such file: check the path') from err
    except IsADirectoryError as err:
        raise ImageReadError(f'{path}: is a folder: pass image files') from err
    except (OSError, ValueError, SyntaxError) as err:  # unreadable, truncated, or not an image
        raise ImageReadError(f'{path}: cannot read the image ({type(err).__name__}): pass a JPEG, PNG, ... '
                             f'file') from err


def read_class_names(path: Union[str, Path], num_classes: int) -> list[str]:
    """One class name per line (blank lines ignored), as many as the model has classes."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise MobileFormerError(f'{path}: cannot read the class names ({type(err).__name__}): pass a UTF-8 text '
                                f'file with one name per line') from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise MobileFormerError(f'{path}: {len(names)} class names for a model with {num_classes} classes: give '
                                f'one name per line, in class-index order')
    return names


def labeller(num_classes: int, class_names: Optional[Sequence[str]] = None) -> Labeller:
    """Names for class indices: the given ones, ImageNet's for a 1000-class model, else `class <i>`."""
    if class_names is not None:
        return lambda i: (class_names[i], '')
    if num_classes == 1000:
        info = ImageNetInfo()
        return lambda i: (info.index_to_label_name(i), info.index_to_description(i))
    return lambda i: (f'class {i}', '')


def predict(model: MobileFormer, images: list[Image.Image], top_k: int = TOP_K) -> list[Prediction]:
    """Top-k classes per image (at most the model's number of classes), preprocessed as the model's
    pretrained cfg says (resize, crop, mean/std)."""
    transform = create_transform(**resolve_data_config({}, model=model))
    batch = torch.stack([transform(img) for img in images])
    with torch.no_grad():
        probs = model.eval()(batch).softmax(dim=-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [list(zip(p.tolist(), i.tolist())) for p, i in zip(top.values, top.indices)]


def format_prediction(name: str, prediction: Prediction, labels: Union[Labeller, ImageNetInfo, None] = None) -> str:
    """The image name, then one line per class: rank, probability, label, description."""
    if labels is None or isinstance(labels, ImageNetInfo):
        labels = labeller(1000)
    lines = [name]
    for rank, (prob, index) in enumerate(prediction, 1):
        label, description = labels(index)
        lines.append(f'  {rank}. {100 * prob:6.2f}%  {label}' + (f'  {description}' if description else ''))
    return '\n'.join(lines)
