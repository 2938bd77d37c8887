"""Train/eval transforms derived from the backbone weights' metadata (resize, crop, mean, std)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchvision.transforms import v2

from dogbreed.backbones import Preprocess


def eval_transform(pre: Preprocess) -> v2.Compose:
    """Resize the shorter side, centre-crop, normalise: exactly what the exported model does inside."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(pre.resize_size, antialias=True),
            v2.CenterCrop(pre.crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre.mean, pre.std),
        ]
    )


def train_transform(pre: Preprocess, augment: Mapping | None) -> v2.Compose:
    """Eval transform plus the configured augmentation (random resized crop, flip, colour jitter)."""
    augment = dict(augment or {})
    if not any(augment.get(k) for k in ("random_resized_crop", "hflip", "color_jitter")):
        return eval_transform(pre)
    steps: list = [v2.PILToTensor()]
    if augment.get("random_resized_crop"):
        steps.append(
            v2.RandomResizedCrop(
                pre.crop_size, scale=(float(augment.get("scale_min", 0.08)), 1.0), antialias=True
            )
        )
    else:
        steps += [v2.Resize(pre.resize_size, antialias=True), v2.CenterCrop(pre.crop_size)]
    if augment.get("hflip"):
        steps.append(v2.RandomHorizontalFlip())
    jitter = float(augment.get("color_jitter") or 0.0)
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    return v2.Compose(steps)
