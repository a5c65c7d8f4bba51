"""A tiny detection set drawn on the fly: circles, squares and triangles on a textured background, with boxes.

Used by `train_detection.py`, and to draw the scene of the README's attention picture:

    python examples/shapes.py docs/images/shapes_scene.png --size 224 --seed 18 --max-shapes 4
"""
import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

# torchvision's detectors reserve label 0 for the background
CLASSES = ('background', 'circle', 'square', 'triangle')
Box = tuple[float, float, float, float]


def textured_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour gradient crossed by faint stripes and pixel noise, so the background is not a flat colour."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    corners = rng.uniform(40, 200, size=(2, 3))
    gradient = corners[0] * (1 - xx[..., None]) + corners[1] * xx[..., None]
    angle = rng.uniform(0, np.pi)
    stripes = 12 * np.sin(2 * np.pi * 8 * (xx * np.cos(angle) + yy * np.sin(angle)))[..., None]
    noise = rng.normal(0, 8, size=(size, size, 3))
    return Image.fromarray(np.clip(gradient + stripes + noise, 0, 255).astype(np.uint8))


def _overlaps(box: Box, boxes: list[Box], margin: float = 2) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin and b[1] < box[3] + margin
               for b in boxes)


def draw_shape(draw: ImageDraw.ImageDraw, label: int, box: Box, color: tuple[int, int, int]) -> None:
    """Fill the shape of class `label` so that it touches all four sides of `box`."""
    x0, y0, x1, y1 = box
    if CLASSES[label] == 'circle':
        draw.ellipse(box, fill=color)
    elif CLASSES[label] == 'square':
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)


def draw_scene(
        rng: np.random.Generator, size: int = 128, max_shapes: int = 3) -> tuple[Image.Image, list[Box], list[int]]:
    """One image with 1 to `max_shapes` non-overlapping shapes, their boxes (x0, y0, x1, y1) and labels."""
    image = textured_background(rng, size)
    draw = ImageDraw.Draw(image)
    boxes: list[Box] = []
    labels: list[int] = []
    wanted = rng.integers(1, max_shapes + 1)
    for _ in range(20 * max_shapes):  # rejection sampling for free space
        if len(boxes) == wanted:
            break
        side = rng.uniform(0.25, 0.5) * size
        x0, y0 = rng.uniform(0, size - side, size=2)
        box = (float(x0), float(y0), float(x0 + side), float(y0 + side))
        if _overlaps(box, boxes):
            continue
        label = int(rng.integers(1, len(CLASSES)))
        draw_shape(draw, label, box, tuple(int(c) for c in rng.integers(0, 256, size=3)))
        boxes.append(box)
        labels.append(label)
    return image, boxes, labels


class ShapesDetection(Dataset):
    """`num_images` scenes drawn once from `seed`: (image in [0, 1], dict(boxes=(K, 4), labels=(K,))) pairs,
    the targets format of torchvision's detectors."""

    def __init__(self, num_images: int = 64, size: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.scenes = [draw_scene(rng, size) for _ in range(num_images)]

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image, boxes, labels = self.scenes[index]
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        target = dict(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels, dtype=torch.int64))
        return pixels, target


def main() -> None:
    parser = argparse.ArgumentParser(description='Draw one shapes scene to a PNG.')
    parser.add_argument('out', help='PNG file to write')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--seed', type=int, default=18)
    parser.add_argument('--max-shapes', type=int, default=4)
    args = parser.parse_args()
    image, boxes, labels = draw_scene(np.random.default_rng(args.seed), args.size, args.max_shapes)
    image.save(args.out, optimize=True)
    shapes = ', '.join(f'{CLASSES[label]} at {tuple(round(v) for v in box)}' for box, label in zip(boxes, labels))
    print(f'wrote {args.out}: {shapes}')


if __name__ == '__main__':
    main()
