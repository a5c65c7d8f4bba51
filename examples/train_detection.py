"""Train a Mobile-Former RetinaNet (or Faster R-CNN) for a few steps on self-drawn shapes and plot the loss.

A smoke test of the detection plumbing that runs on a laptop CPU in a minute or two, not a benchmark:

    python examples/train_detection.py --steps 60 --out docs/images/detection_loss.png

Prints the losses at every step and writes the loss curve as a PNG (drawn with Pillow).
"""
import argparse
import time
from collections.abc import Iterator, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from shapes import CLASSES, ShapesDetection
from torch.utils.data import DataLoader

from timm_mobileformer.detection import build_fasterrcnn, build_retinanet

BUILDERS = dict(retinanet=build_retinanet, fasterrcnn=build_fasterrcnn)
# black for the total, then the first four colours of the usual 'tab10' palette
PALETTE = ((0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def collate(batch: Sequence) -> tuple[list, list]:
    """Detectors take lists of images and targets, not stacked tensors."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def endless(loader: DataLoader) -> Iterator:
    """The loader's batches epoch after epoch, reshuffled each time."""
    while True:
        yield from loader


def train(model: torch.nn.Module, loader: DataLoader, steps: int, lr: float) -> dict[str, list[float]]:
    """AdamW on all parameters for `steps` batches; returns every loss term per step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    history: dict[str, list[float]] = {}
    model.train()
    batches = endless(loader)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        images, targets = next(batches)
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        terms = dict(total=total.item(), **{k: v.item() for k, v in losses.items()})
        for name, value in terms.items():
            history.setdefault(name, []).append(value)
        print(f'step {step:3d}/{steps}  ' + '  '.join(f'{k} {v:.3f}' for k, v in terms.items())
              + f'  ({time.perf_counter() - start:.2f} s)', flush=True)
    return history


def plot_losses(history: dict[str, list[float]], path: str, title: str, size: tuple[int, int] = (640, 400)) -> None:
    """Loss terms against step as a line chart: axes, a few y ticks, one coloured line per term, a legend."""
    width, height = size
    left, right, top, bottom = 56, 16, 32, 36
    image = Image.new('RGB', size, 'white')
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    steps = len(history['total'])
    y_max = max(max(v) for v in history.values()) * 1.05

    def to_xy(step: int, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * (step / max(steps - 1, 1))
        return x, top + (height - top - bottom) * (1 - value / y_max)

    for k in range(5):  # y grid and ticks
        value = y_max * k / 4
        _, y = to_xy(0, value)
        draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        draw.text((4, y - 7), f'{value:.2f}', fill='black', font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline='black')
    for k in range(0, steps, max(1, steps // 8)):  # x ticks at 1-based step numbers
        x, _ = to_xy(k, 0)
        draw.text((x - 6, height - bottom + 4), str(k + 1), fill='black', font=font)
    draw.text((width // 2 - 12, height - 16), 'step', fill='black', font=font)
    draw.text((left, 8), title, fill='black', font=font)
    for i, (name, values) in enumerate(history.items()):
        color = PALETTE[i % len(PALETTE)]
        draw.line([to_xy(s, v) for s, v in enumerate(values)], fill=color, width=3 if name == 'total' else 2)
        x, y = width - right - 150, top + 6 + 16 * i
        draw.line([(x, y + 7), (x + 16, y + 7)], fill=color, width=3)
        draw.text((x + 22, y), name, fill=color, font=font)
    image.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variant', default='mobileformer_26m')
    parser.add_argument('--detector', choices=tuple(BUILDERS), default='retinanet')
    parser.add_argument('--checkpoint', metavar='FILE', help="backbone weights: the authors' or a converted file "
                                                             '(default: random init)')
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--num-images', type=int, default=64, help='size of the self-drawn training set')
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=1e-4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='detection_loss.png', help='loss curve PNG')
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = ShapesDetection(args.num_images, args.image_size, seed=args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    model = BUILDERS[args.detector](
        args.variant, num_classes=len(CLASSES), checkpoint=args.checkpoint,
        min_size=args.image_size, max_size=args.image_size)
    weights = args.checkpoint or 'random init'
    print(f'{args.detector} on {args.variant} ({weights}), {len(data)} images of {args.image_size} px, '
          f'batch {args.batch_size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params')
    start = time.perf_counter()
    history = train(model, loader, args.steps, args.lr)
    total = history['total']
    head, tail = total[:5], total[-5:]
    print(f'total loss: step 1 {total[0]:.3f}, step {len(total)} {total[-1]:.3f}; mean of first 5 '
          f'{sum(head) / len(head):.3f}, last 5 {sum(tail) / len(tail):.3f}; {time.perf_counter() - start:.0f} s')
    title = f'{args.detector} training loss: {args.variant} backbone ({weights}), self-drawn shapes'
    plot_losses(history, args.out, title)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
