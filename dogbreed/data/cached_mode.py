"""The cached-features mode: a frozen backbone runs once per image and view, and the head trains from the
stored features, across epochs and tuning trials (``data.cache.enabled`` with ``model.freeze=frozen``).

One object owns what the mode needs: the extractor (a fast copy of the frozen backbone), the cache key
(everything that changes a feature besides the image), the store, and the datasets it serves. ``train.py``
switches it on with :meth:`CachedFeaturesMode.attach`, which tells the datamodule to serve features and the
model to run only its head; nothing downstream guesses the mode from tensor shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision.datasets import ImageFolder

from dogbreed.backbones import Preprocess
from dogbreed.data.feature_cache import CachedFeatures, FeatureCache, file_digest, module_digest
from dogbreed.data.transforms import eval_transform, train_transform
from dogbreed.perf import FeatureExtractor

if TYPE_CHECKING:
    from dogbreed.data.datamodule import ImageFolderDataModule
    from dogbreed.model import BreedClassifier

log = logging.getLogger(__name__)


class CachedFeaturesMode:
    """Serves ``(feature, label)`` datasets computed by ``backbone`` and stored under ``key_parts``."""

    def __init__(
        self,
        backbone: nn.Module,
        key_parts: Mapping[str, Any],
        preprocess: Preprocess,
        augment: Mapping[str, Any],
        *,
        dir: str | None = None,
        views: int = 1,
        batch_size: int = 64,
        fast: bool = True,
        num_workers: int = 0,
    ) -> None:
        self.backbone = backbone
        self.extractor = FeatureExtractor(
            backbone, device="cuda" if torch.cuda.is_available() else "cpu", fast=fast
        )
        self.key_parts = {**key_parts, "extractor": self.extractor.describe()}
        self.store = FeatureCache(dir, self.key_parts)
        self.preprocess, self.augment = preprocess, dict(augment)
        self.views, self.batch_size, self.num_workers = max(1, int(views)), int(batch_size), num_workers
        self.datasets: dict[str, CachedFeatures] = {}

    @classmethod
    def attach(cls, model: BreedClassifier, datamodule: ImageFolderDataModule) -> CachedFeaturesMode | None:
        """With ``data.cache.enabled`` and a frozen backbone: build the mode, make ``datamodule`` serve its
        features and ``model`` take them as batches. Otherwise leave both on images and return None."""
        settings = datamodule.cache
        if not settings["enabled"] or model.hparams.freeze != "frozen":
            return None
        hp = model.hparams
        key_parts = {
            "backbone": hp.backbone,
            "weights": hp.weights if model.pretrained else None,
            "weights_file": file_digest(hp.weights_file) if hp.weights_file else None,
            # a random initialisation computes what its draw computes, which no seed setting names
            "random_init": None if model.pretrained else module_digest(model.backbone),
            "preprocess": datamodule.preprocess.to_dict(),
            "augment": datamodule.augment,
            "torch": torch.__version__.split("+")[0],
        }
        mode = cls(
            model.backbone,
            key_parts,
            datamodule.preprocess,
            datamodule.augment,
            dir=settings.get("dir"),
            views=settings["views"],
            batch_size=settings["batch_size"],
            fast=bool(settings.get("fast", True)),
            num_workers=datamodule.num_workers,
        )
        datamodule.features = mode
        datamodule.datasets.clear()  # any split built from images is rebuilt from features
        model.batch_inputs = "features"
        log.info("Feature cache on (%s): the frozen backbone runs once per image and view", mode.describe())
        return mode

    def describe(self) -> str:
        return self.extractor.describe()

    def computed_by(self, model: nn.Module) -> bool:
        """Whether ``model``'s backbone is the one these features came from (the same module object)."""
        return getattr(model, "backbone", None) is self.backbone

    def dataset(self, split: str, images: ImageFolder) -> CachedFeatures:
        """``images``' features (from the store, computing only what it lacks); the train split gets
        ``views`` views per image, one drawn per access."""
        views = self.views if split == "train" else 1
        paths = [path for path, _ in images.samples]
        features = self.store.features(
            split,
            paths,
            views,
            self.extractor,
            eval_transform(self.preprocess),
            train_transform(self.preprocess, self.augment),
            self.preprocess.resize_size,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )
        self.datasets[split] = CachedFeatures(
            features, images.targets, random_view=split == "train", paths=paths
        )
        return self.datasets[split]
