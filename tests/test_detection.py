"""Mobile-Former under torchvision's RetinaNet and Faster R-CNN: pyramid shapes, train and eval passes, the example."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from timm_mobileformer.detection import MobileFormerFPN, build_fasterrcnn, build_retinanet

TINY = dict(min_size=128, max_size=160)
EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'


def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 150), torch.rand(3, 120, 128)]
    targets = [
        dict(boxes=torch.tensor([[10., 20., 60., 70.]]), labels=torch.tensor([1])),
        dict(boxes=torch.tensor([[5., 5., 50., 40.], [60., 60., 100., 110.]]), labels=torch.tensor([2, 3])),
    ]
    return images, targets


def check_train_and_eval(model: torch.nn.Module, loss_names: set) -> None:
    """Train mode: finite losses whose backward reaches the backbone; eval mode: one detection dict per image."""
    images, targets = batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == loss_names
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    stem = model.backbone.body.model.stem.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for det, image in zip(detections, images):
        assert len(det['boxes']) > 0
        assert det['boxes'].shape == (len(det['scores']), 4) and det['labels'].shape == det['scores'].shape
        assert (det['boxes'][:, 2:] <= torch.tensor(image.shape[:0:-1])).all()  # within the original image


@pytest.mark.parametrize('variant', ['mobileformer_26m', 'mobileformer_294m'])
def test_retinanet_trains_and_detects(variant):
    torch.manual_seed(0)
    model = build_retinanet(variant, num_classes=4, score_thresh=0.0, **TINY)  # every anchor may report
    check_train_and_eval(model, {'classification', 'bbox_regression'})


def test_fasterrcnn_trains_and_detects():
    torch.manual_seed(0)
    model = build_fasterrcnn('mobileformer_26m', num_classes=4, box_score_thresh=0.0, **TINY)
    check_train_and_eval(model, {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'})


def test_pyramid_has_the_chosen_strides_and_channels():
    backbone = MobileFormerFPN('mobileformer_26m', (2, 3, 4), 32, LastLevelP6P7(32, 32)).eval()
    assert backbone.strides == [8, 16, 32] and backbone.in_channels == [24, 64, 96]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 128, 128))
    assert list(maps) == ['0', '1', '2', 'p6', 'p7']
    assert [tuple(m.shape) for m in maps.values()] == [(1, 32, s, s) for s in (16, 8, 4, 2, 1)]


def test_retinanet_anchors_match_torchvision_resnet_recipe():
    model = build_retinanet('mobileformer_26m', num_classes=2, fpn_channels=32)
    assert model.anchor_generator.sizes == tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3)))
                                                 for x in (32, 64, 128, 256, 512))


def test_batchnorm_is_frozen_only_when_asked_or_pretrained():
    def trainable_bn(model: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    assert trainable_bn(MobileFormerFPN('mobileformer_26m', out_channels=16)) > 0
    assert trainable_bn(MobileFormerFPN('mobileformer_26m', out_channels=16, freeze_bn=True)) == 0


def test_example_trains_and_plots(tmp_path):
    out = tmp_path / 'loss.png'
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / 'train_detection.py'), '--steps', '2', '--num-images', '4',
         '--batch-size', '2', '--out', str(out)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'step   2/2' in result.stdout and out.stat().st_size > 0
