"""Run a model over one split of an ImageFolder dataset: probabilities, targets and image paths.

Two kinds of model, fed the way each is fed in production:

- a ``BreedClassifier`` (in memory or a Lightning ``.ckpt``): the evaluation transform, exactly as
  ``trainer.test`` feeds it, so top-1 here equals the run's ``test_acc``;
- the exported TorchScript ``model.pt`` (also read from inside ``model.tar.gz``, as a SageMaker training
  job returns it): uint8 images through its own ``predict_images``, so a model back from SageMaker is
  judged on what it will really see at the endpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from dogbreed.data.images import load_rgb
from dogbreed.data.layout import SPLIT_ALIASES, DatasetError, find_splits
from dogbreed.data.transforms import eval_transform

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """One row per image of the split, in ImageFolder order."""

    probs: torch.Tensor  # (N, C) float32 probabilities over ``class_names``
    targets: torch.Tensor  # (N,) int64 indices into ``class_names``
    paths: list[str]
    class_names: list[str]


def canonical_split(split: str) -> str:
    """``val`` → ``valid``; an unknown name fails with the choices."""
    for name, aliases in SPLIT_ALIASES.items():
        if split in aliases:
            return name
    choices = ", ".join(a for aliases in SPLIT_ALIASES.values() for a in aliases)
    raise ValueError(f"split={split!r} is not a dataset split; use one of {choices}")


def split_dir(root: str | Path, split: str) -> Path:
    """The folder of ``split`` under ``root`` (only that split has to exist)."""
    split = canonical_split(split)
    return find_splits(root, required=(split,)).splits[split]


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_list(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Collate differently sized uint8 images into a list (``predict_images`` takes one)."""
    return [img for img, _ in batch], torch.tensor([t for _, t in batch], dtype=torch.long)


def _class_map(dataset: ImageFolder, class_names: list[str], folder: Path) -> torch.Tensor:
    """Dataset class index → model class index; unknown folders fail with their names."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [c for c in dataset.classes if c not in index]
    if unknown:
        shown = ", ".join(class_names[:3]) + (", …" if len(class_names) > 3 else "")
        raise DatasetError(
            f"{folder}: class folders the model was not trained on: {', '.join(unknown)}. The model knows "
            f"{len(class_names)} classes ({shown}); point data.root at a dataset with the same class folders."
        )
    missing = sorted(set(class_names) - set(dataset.classes))
    if missing:
        log.warning(
            "%s lacks %d of the model's classes (%s); they count with support 0",
            folder,
            len(missing),
            ", ".join(missing[:5]),
        )
    return torch.tensor([index[c] for c in dataset.classes], dtype=torch.long)


@torch.inference_mode()
def predict_split(
    model: nn.Module, folder: str | Path, batch_size: int = 32, num_workers: int = 0, device: str = "auto"
) -> Predictions:
    """Probabilities for every image under ``folder`` (an ImageFolder split: ``<class>/<image>``)."""
    folder = Path(folder)
    dev = _device(device)
    class_names = list(model.class_names)
    uint8_input = hasattr(model, "predict_images")  # TorchScript export or eager ExportedClassifier
    if uint8_input:
        transform, collate = v2.PILToTensor(), _as_list
        min_side = int(getattr(model, "resize_size", 0)) or None
    else:
        transform, collate = eval_transform(model.preprocess), None
        min_side = int(model.preprocess.resize_size)
    dataset = ImageFolder(
        str(folder), transform=transform, loader=partial(load_rgb, min_side=min_side), allow_empty=True
    )
    if not dataset.samples:
        raise DatasetError(f"{folder} holds no images; expected {folder}/<class>/<image>.jpg")
    remap = _class_map(dataset, class_names, folder)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    model = model.eval().to(dev)
    probs, targets = [], []
    for images, labels in loader:
        if uint8_input:
            out = model.predict_images([img.to(dev) for img in images])
        else:
            out = torch.softmax(model(images.to(dev)).float(), dim=1)
        probs.append(out.float().cpu())
        targets.append(remap[labels])
    return Predictions(
        probs=torch.cat(probs),
        targets=torch.cat(targets),
        paths=[path for path, _ in dataset.samples],
        class_names=class_names,
    )


def cached_predictions(model: nn.Module, datamodule: Any, split: str) -> Predictions | None:
    """With the cached-features mode (``datamodule.features``) and the model whose backbone computed them,
    run only the head over the split's cached features: the exact numbers ``trainer.test`` computed, without
    decoding or re-embedding a single image. None otherwise (then the images are predicted)."""
    mode = datamodule.features
    if mode is None or not mode.computed_by(model):
        return None
    datamodule.setup("test" if split == "test" else None)
    dataset = mode.datasets.get(split)
    if dataset is None:
        return None
    model = model.eval().cpu().float()
    with torch.inference_mode():
        probs = torch.softmax(model.head(dataset.features[:, 0].float()), dim=1)
    return Predictions(
        probs=probs, targets=dataset.targets.clone(), paths=dataset.paths, class_names=list(model.class_names)
    )
