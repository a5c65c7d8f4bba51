"""`timm-mobileformer predict`: top-5 ImageNet classes for images, with the weights' own preprocessing."""
import argparse
from typing import List, Optional, Tuple

import torch
from PIL import Image

import timm
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from .errors import MobileFormerError
from .hub import WeightsUnreachableError
from .weights import create_from_checkpoint, resolve_model_name
from .mobileformer import MobileFormer

COMMAND = 'predict'
HELP = 'Print the top-5 ImageNet classes of images, with the Hub weights or a local checkpoint.'

DEFAULT_VARIANT = 'mobileformer_294m'
TOP_K = 5

# (probability, class index) pairs, best first
Prediction = List[Tuple[float, int]]


class ImageReadError(MobileFormerError, ValueError):
    """An image file that can't be read, said in one line."""


def load_model(variant: Optional[str] = None, checkpoint: Optional[str] = None) -> MobileFormer:
    """The pretrained model: from a local authors' / converted checkpoint if given, else from the Hub."""
    if checkpoint:
        return create_from_checkpoint(checkpoint, variant)
    return timm.create_model(resolve_model_name(variant or DEFAULT_VARIANT), pretrained=True).eval()


def read_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert('RGB')
    except (OSError, ValueError) as err:  # missing, unreadable, or not an image
        raise ImageReadError(f'{path}: cannot read the image ({type(err).__name__}): pass a JPEG, PNG, ... file') from err


def predict(model: MobileFormer, images: List[Image.Image], top_k: int = TOP_K) -> List[Prediction]:
    """Top-k classes per image, preprocessed as the model's pretrained cfg says (resize, crop, mean/std)."""
    transform = create_transform(**resolve_data_config({}, model=model))
    batch = torch.stack([transform(img) for img in images])
    with torch.no_grad():
        probs = model.eval()(batch).softmax(dim=-1)
    top = probs.topk(top_k, dim=-1)
    return [list(zip(p.tolist(), i.tolist())) for p, i in zip(top.values, top.indices)]


def format_prediction(name: str, prediction: Prediction, info: ImageNetInfo) -> str:
    """The image name, then one line per class: rank, probability, synset, description."""
    lines = [name]
    for rank, (prob, index) in enumerate(prediction, 1):
        lines.append(f'  {rank}. {100 * prob:6.2f}%  {info.index_to_label_name(index)}  '
                     f'{info.index_to_description(index)}')
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--model', metavar='V', help=f'variant, e.g. 294m (default: detected from --checkpoint, '
                        f'else {DEFAULT_VARIANT})')
    parser.add_argument('--checkpoint', metavar='FILE', help="an authors' .pth.tar or a converted model.safetensors "
                        '(default: the Hub weights)')


def run(args: argparse.Namespace) -> int:
    try:
        images = [read_image(path) for path in args.images]
        model = load_model(args.model, args.checkpoint)
    except MobileFormerError as err:
        raise SystemExit(f'error: {err}')
    info = ImageNetInfo()
    for path, prediction in zip(args.images, predict(model, images)):
        print(format_prediction(path, prediction, info))
    return 0
