"""Training images as the model saw them: through the run's own training transform, or, with the frozen
backbone's feature cache, the cached views themselves (the head never sees anything else)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from dogbreed.data.feature_cache import CachedFeatures, file_digest, view_image
from dogbreed.data.transforms import eval_transform, train_transform
from dogbreed.evaluate.plots import short_name


@dataclass
class Samples:
    images: list[np.ndarray]  # H×W×3 uint8, de-normalised
    labels: list[str]
    how: str  # one sentence: which transform produced them


def _to_uint8(x: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    x = x.float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _augment_text(augment: dict) -> str:
    parts = []
    if augment.get("random_resized_crop"):
        parts.append(f"random resized crop (scale ≥ {augment.get('scale_min', 0.08)})")
    if augment.get("hflip"):
        parts.append("horizontal flip")
    if augment.get("color_jitter"):
        parts.append(f"colour jitter {augment['color_jitter']}")
    return ", ".join(parts) or "no augmentation (data.augment is off)"


def training_samples(datamodule, n: int = 16, seed: int = 0) -> Samples | None:
    """``n`` training images drawn as training draws them; None when the run has no training split."""
    dataset = getattr(datamodule, "datasets", {}).get("train")
    if dataset is None or n < 1 or len(dataset) == 0:
        return None
    picks = random.Random(seed).sample(range(len(dataset)), min(n, len(dataset)))
    with torch.random.fork_rng():  # the report must not move the training's random state
        torch.manual_seed(seed)
        return _draw(datamodule, dataset, picks, seed)


def _draw(datamodule, dataset, picks: list[int], seed: int) -> Samples:
    pre, names = datamodule.preprocess, datamodule.class_names
    images, labels = [], []
    if isinstance(dataset, CachedFeatures):
        views = int(dataset.features.shape[1])
        eval_tf, aug_tf = eval_transform(pre), train_transform(pre, datamodule.augment)
        rng = random.Random(seed)
        for i in picks:
            path = dataset.paths[i]
            x = view_image(path, file_digest(path), rng.randrange(views), eval_tf, aug_tf, pre.resize_size)
            images.append(_to_uint8(x, pre.mean, pre.std))
            labels.append(names[int(dataset.targets[i])])
        how = (
            "The backbone is frozen, so its features were computed once per image (data.cache) and the head "
            "trained on those: "
            + (
                "one view per image, the centre crop, so training saw no augmentation "
                "(data.cache.views=K adds K-1 augmented views)."
                if views == 1
                else f"{views} views per image (the centre crop and {views - 1} augmented: "
                f"{_augment_text(datamodule.augment)}), one drawn per epoch."
            )
        )
    else:
        for i in picks:
            x, y = dataset[i]
            images.append(_to_uint8(x, pre.mean, pre.std))
            labels.append(names[int(y)])
        how = (
            f"Drawn through the training transform ({_augment_text(datamodule.augment)}), then resized to "
            f"{pre.crop_size}×{pre.crop_size} and normalised; shown de-normalised."
        )
    return Samples(images, labels, how)


def samples_figure(samples: Samples) -> Figure:
    cols = min(8, math.ceil(math.sqrt(len(samples.images) * 2)))
    rows = math.ceil(len(samples.images) / cols)
    fig = Figure(figsize=(cols * 1.7, rows * 1.9), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, img, label in zip(axes, samples.images, samples.labels, strict=False):
        ax.imshow(img)
        ax.set_title(short_name(label, 18), fontsize=8)
    return fig
