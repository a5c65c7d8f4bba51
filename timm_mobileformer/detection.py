"""Mobile-Former as a detection backbone for torchvision's RetinaNet and Faster R-CNN.

`MobileFormerFPN` takes the Mobile feature maps at chosen strides (timm's `features_only`), puts a
torchvision `FeaturePyramidNetwork` on top and exposes `out_channels`, which is all torchvision's detectors
ask of a backbone. `build_retinanet` and `build_fasterrcnn` assemble the detectors with anchors sized to the
pyramid's strides, following torchvision's ResNet-50-FPN recipes:

- RetinaNet: strides 8, 16, 32 (out_indices 2, 3, 4) plus P6 and P7 from P5, anchors 4x the stride at
  3 scales and 3 aspect ratios (the paper's detector; its reported gain is +8.6 AP over MobileNetV3).
- Faster R-CNN: strides 4 to 32 (out_indices 1 to 4) plus a max-pooled level, anchors 8x the stride.

As in torchvision, `num_classes` counts the background, so object labels run from 1 to num_classes - 1,
and BatchNorm is frozen when the backbone is pretrained (small detection batches can't estimate it).
"""
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import timm
import torch
import torch.nn as nn
from timm.layers import freeze_batch_norm_2d
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from .weights import checkpoint_overlay

__all__ = ['MobileFormerFPN', 'build_retinanet', 'build_fasterrcnn']

ASPECT_RATIOS = (0.5, 1.0, 2.0)


class MobileFormerFPN(nn.Module):
    """Mobile-Former feature maps at `out_indices` (0..4 = strides 2..32) with an FPN on top.

    `forward(images)` returns an OrderedDict of `out_channels`-wide maps named '0', '1', ... per tap, then
    whatever `extra_blocks` adds ('pool', or 'p6' and 'p7'). `in_channels` and `strides` describe the taps.
    The Former's tokens stay inside the backbone: they steer the maps but are not an output.
    """

    def __init__(
            self,
            variant: str = 'mobileformer_294m',
            out_indices: Sequence[int] = (2, 3, 4),
            out_channels: int = 256,
            extra_blocks: Optional[ExtraFPNBlock] = None,
            pretrained: bool = False,
            checkpoint: Optional[str] = None,
            freeze_bn: Optional[bool] = None,
    ):
        """`checkpoint` loads a local authors' or converted file and implies `pretrained`; `freeze_bn`
        defaults to whether the backbone is pretrained."""
        super().__init__()
        pretrained = pretrained or checkpoint is not None
        overlay = checkpoint_overlay(checkpoint) if checkpoint else None
        body = timm.create_model(variant, pretrained=pretrained, pretrained_cfg_overlay=overlay, features_only=True,
                                 out_indices=tuple(out_indices))
        self.body = freeze_batch_norm_2d(body) if (pretrained if freeze_bn is None else freeze_bn) else body
        self.in_channels: list[int] = body.feature_info.channels()
        self.strides: list[int] = body.feature_info.reduction()
        self.feature_names = [str(i) for i in range(len(self.in_channels))]
        self.fpn = FeaturePyramidNetwork(self.in_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    @property
    def image_mean_std(self) -> dict[str, tuple[float, ...]]:
        """The normalisation the backbone was (or would be) trained with, as torchvision detector kwargs."""
        cfg = self.body.pretrained_cfg
        return dict(image_mean=tuple(cfg['mean']), image_std=tuple(cfg['std']))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(OrderedDict(zip(self.feature_names, self.body(x))))


def anchor_generator(strides: Sequence[int], size_per_stride: int, scales: Sequence[float]) -> AnchorGenerator:
    """Anchors of `size_per_stride * stride * scale` per level and scale, at the three usual aspect ratios."""
    sizes = tuple(tuple(int(size_per_stride * s * k) for k in scales) for s in strides)
    return AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(strides))


def _with_extra_levels(strides: Sequence[int], count: int) -> list[int]:
    """The strides of the pyramid once `count` levels, each halving the last, are added on top."""
    return list(strides) + [strides[-1] * 2 ** (k + 1) for k in range(count)]


def build_retinanet(
        variant: str,
        num_classes: int,
        pretrained_backbone: bool = False,
        checkpoint: Optional[str] = None,
        out_indices: Sequence[int] = (2, 3, 4),
        fpn_channels: int = 256,
        freeze_bn: Optional[bool] = None,
        **kwargs: Any,
) -> RetinaNet:
    """A torchvision RetinaNet on a Mobile-Former FPN (P3-P5 from the backbone, P6-P7 on top).

    `num_classes` includes the background; `kwargs` go to `RetinaNet` (e.g. min_size, max_size, score_thresh).
    """
    backbone = MobileFormerFPN(
        variant, out_indices, fpn_channels, LastLevelP6P7(fpn_channels, fpn_channels),
        pretrained_backbone, checkpoint, freeze_bn)
    anchors = anchor_generator(_with_extra_levels(backbone.strides, 2), 4, (1.0, 2 ** (1 / 3), 2 ** (2 / 3)))
    return RetinaNet(
        backbone, num_classes, anchor_generator=anchors, **dict(backbone.image_mean_std, **kwargs))


def build_fasterrcnn(
        variant: str,
        num_classes: int,
        pretrained_backbone: bool = False,
        checkpoint: Optional[str] = None,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        fpn_channels: int = 256,
        freeze_bn: Optional[bool] = None,
        **kwargs: Any,
) -> FasterRCNN:
    """A torchvision Faster R-CNN on a Mobile-Former FPN (the taps plus a max-pooled level for the RPN).

    `num_classes` includes the background; `kwargs` go to `FasterRCNN` (e.g. min_size, max_size).
    """
    backbone = MobileFormerFPN(
        variant, out_indices, fpn_channels, LastLevelMaxPool(), pretrained_backbone, checkpoint, freeze_bn)
    anchors = anchor_generator(_with_extra_levels(backbone.strides, 1), 8, (1.0,))
    roi_pool = MultiScaleRoIAlign(backbone.feature_names, output_size=7, sampling_ratio=2)
    return FasterRCNN(
        backbone, num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        **dict(backbone.image_mean_std, **kwargs))
