"""`timm-mobileformer demo-data DIR`: a small, procedurally drawn image-classification set in ImageFolder layout.

The class is the kind of shape. Everything else (position, size, rotation, shape colour, background colour,
gradient and noise) is drawn from the same distribution for every class, and the shape's area, not its
bounding box, is what is sampled, so neither the colours nor the number of foreground pixels give the class
away: a network has to look at the outline. Shapes are drawn without anti-aliasing for the same reason (an
edge's blended pixels would count its perimeter). Images are PNG, deterministic for a seed, and the set is
written to a temporary sibling folder that is renamed into place only when complete.
"""
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import MobileFormerError
from .outputs import check_output, staged

SPLITS = ('train', 'validation')
AREA_RANGE = (0.12, 0.28)  # shape area as a fraction of the image
MIN_COLOUR_DISTANCE = 90.  # between shape and background colour, so the shape is always visible
NOISE_STD_RANGE = (2., 10.)
MIN_SIZE = 32  # the smallest input Mobile-Former takes

Point = tuple[float, float]
# a shape is a list of (polygon in unit coordinates, fill): fill 1 draws, 0 cuts a hole
Shape = list[tuple[list[Point], int]]


def regular_polygon(n: int, radius: float = 1., phase: float = 0.) -> list[Point]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def star(points: int = 5, inner: float = 0.45) -> list[Point]:
    radii = [1. if k % 2 == 0 else inner for k in range(2 * points)]
    return [(r * math.cos(math.pi * k / points), r * math.sin(math.pi * k / points)) for k, r in enumerate(radii)]


def cross(half_width: float = 0.33) -> list[Point]:
    w = half_width
    quarter = [(1., -w), (1., w), (w, w)]  # one arm's tip and the inner corner after it
    return [(x * c - y * s, x * s + y * c) for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1)) for x, y in quarter]


# every shape fits in the unit disc, so a shape scaled by r fits in a circle of radius r
SHAPES: dict[str, Shape] = {
    'circle': [(regular_polygon(64), 1)],
    'ring': [(regular_polygon(64), 1), (regular_polygon(64, 0.6), 0)],
    'triangle': [(regular_polygon(3), 1)],
    'square': [(regular_polygon(4), 1)],
    'star': [(star(), 1)],
    'cross': [(cross(), 1)],
}
CLASSES: tuple[str, ...] = tuple(SHAPES)


def polygon_area(points: Sequence[Point]) -> float:
    """Shoelace formula."""
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]]))) / 2


def shape_area(shape: Shape) -> float:
    return sum(polygon_area(poly) * (1 if fill else -1) for poly, fill in shape)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two nearby colours in a random direction (float HxWx3), noise added later."""
    base = rng.uniform(0, 255, size=3)
    other = np.clip(base + rng.uniform(-50, 50, size=3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / (t.max() - t.min())
    return base * (1 - t[..., None]) + other * t[..., None]


def shape_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random RGB colour at least MIN_COLOUR_DISTANCE away from `avoid`."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - avoid) >= MIN_COLOUR_DISTANCE:
            return colour


def shape_mask(rng: np.random.Generator, shape: Shape, size: int) -> np.ndarray:
    """A boolean HxW mask of `shape` with a random area, rotation and position that keeps it inside the image."""
    area = rng.uniform(*AREA_RANGE) * size * size
    scale = math.sqrt(area / shape_area(shape))
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(scale, size - scale, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    mask = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for poly, fill in shape:
        draw.polygon([(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in poly],
                     fill=255 * fill)
    return np.asarray(mask) > 0


def draw_sample(rng: np.random.Generator, label: int, size: int = 64) -> Image.Image:
    """One RGB image of class `label`: a flat-coloured shape over a gradient background, all under pixel noise."""
    image = background(rng, size)
    colour = shape_colour(rng, image.mean(axis=(0, 1)))
    image[shape_mask(rng, SHAPES[CLASSES[label]], size)] = colour
    image += rng.normal(0, rng.uniform(*NOISE_STD_RANGE), size=image.shape)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def write_split(root: Path, split: str, per_class: int, seed: int, size: int) -> None:
    """`per_class` images of each class under root/split/<class>/, each from its own seeded generator."""
    split_id = SPLITS.index(split)
    for label, name in enumerate(CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, split_id, label, i])
            draw_sample(rng, label, size).save(folder / f'{name}_{i:05d}.png')


def make_demo_data(
        root: os.PathLike,
        seed: int = 0,
        train_per_class: int = 800,
        val_per_class: int = 100,
        size: int = 64,
        overwrite: bool = False,
) -> Path:
    """Write the demo set to `root` (which must not exist or be empty, unless `overwrite`) and return its path.

    The set is written under a staging name next to `root` and moved into place only when complete.
    """
    for name, value, low in (('train_per_class', train_per_class, 1), ('val_per_class', val_per_class, 1),
                             ('size', size, MIN_SIZE), ('seed', seed, 0)):
        if not isinstance(value, int) or value < low:
            raise MobileFormerError(f'{name} is {value}: give a whole number of at least {low}')
    root = check_output(root, kind='dir', overwrite=overwrite, option='')
    with staged(root, 'dir', overwrite=overwrite) as tmp:
        for split, per_class in zip(SPLITS, (train_per_class, val_per_class)):
            write_split(tmp, split, per_class, seed, size)
    return root
