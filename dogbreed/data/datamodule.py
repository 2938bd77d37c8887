"""ImageFolderDataModule: train / valid (or val) / test folders, transforms from the backbone's weights."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from dogbreed.backbones import Preprocess
from dogbreed.config import at_least
from dogbreed.cores import usable_cores
from dogbreed.data import layout as layout_mod
from dogbreed.data.images import load_rgb
from dogbreed.data.resumable import EpochSampler, ResumableDataLoader, ignore_sigint
from dogbreed.data.transforms import eval_transform, train_transform

if TYPE_CHECKING:
    from dogbreed.data.cached_mode import CachedFeaturesMode


def default_num_workers() -> int:
    """Leave one core for the training process; at most 8 workers."""
    return max(0, min(8, usable_cores() - 1))


class _Loader:
    """Picklable image loader that reduces JPEGs on decode to the size the transform needs."""

    def __init__(self, min_side: int) -> None:
        self.min_side = min_side

    def __call__(self, path: str):
        return load_rgb(path, self.min_side)


class ImageFolderDataModule(pl.LightningDataModule):
    """Loads ``root/{train,valid|val,test}/<class>/<image>`` with transforms matching the backbone.

    The class sets of the splits are checked (and empty classes rejected) when the module is built,
    so a broken dataset fails before any training starts. ``preprocess`` is the backbone's (``build()``
    assigns ``model.preprocess``); ``cache`` holds the ``data.cache`` settings that
    :class:`~dogbreed.data.cached_mode.CachedFeaturesMode` reads.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 32,
        num_workers: int | None = None,
        pin_memory: bool | str = "auto",
        augment: Mapping | None = None,
        verify: bool = False,
        synthetic: Mapping | None = None,
        cache: Mapping | None = None,
        preprocess: Preprocess | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if synthetic is not None:
            from dogbreed.data.synthetic import SyntheticSpec, ensure

            ensure(self.root, SyntheticSpec(**dict(synthetic)))
        at_least("data.batch_size", batch_size, 1)  # the rules validate() applies to the config
        at_least("data.num_workers", num_workers, 0, " (or null for automatic)")
        self.batch_size = int(batch_size)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.augment = dict(augment or {})
        self.verify = verify
        self.seed = seed
        self.preprocess = preprocess or Preprocess()
        self.cache = {"enabled": False, "dir": None, "views": 1, "batch_size": 64, **dict(cache or {})}
        # Set by CachedFeaturesMode.attach: the splits are then the frozen backbone's cached features.
        self.features: CachedFeaturesMode | None = None
        self.layout = layout_mod.find_splits(self.root)
        self.class_names: list[str] = layout_mod.check_structure(self.layout)
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _dataset(self, split: str) -> Dataset:
        transform = (
            train_transform(self.preprocess, self.augment)
            if split == "train"
            else eval_transform(self.preprocess)
        )
        ds = ImageFolder(
            str(self.layout.splits[split]), transform=transform, loader=_Loader(self.preprocess.resize_size)
        )
        if ds.classes != self.class_names:
            raise layout_mod.DatasetError(
                f"{self.layout.splits[split]}: class folders changed since the dataset was checked"
            )
        return ds if self.features is None else self.features.dataset(split, ds)

    def setup(self, stage: str | None = None) -> None:
        if self.verify and not getattr(self, "_verified", False):
            self._verify()
            self._verified = True
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, ("train", "valid", "test")) if stage else ("train", "valid", "test"):
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split)

    def _verify(self) -> None:
        """Full decode check of every image (``data.verify=true``); see ``python -m dogbreed.data check``."""
        from dogbreed.data.check import run_check

        report = run_check(self.root)
        if report.blocking:
            raise layout_mod.DatasetError(
                f"data.verify found problems that would break training in {self.root}:\n  - "
                + "\n  - ".join(report.blocking_lines())
                + (
                    f"\nRun `python -m dogbreed.data check {self.root} --quarantine DIR` to move the broken "
                    "files out."
                )
            )

    def _loader(self, split: str) -> DataLoader:
        """Train: a loader that resumes mid-epoch (seeded order per epoch); valid/test: in order."""
        if split not in self.datasets:
            self.setup(None)
        dataset = self.datasets[split]
        if split == "train":
            cls, sampler = ResumableDataLoader, EpochSampler(len(dataset), shuffle=True, seed=self.seed)
        else:
            cls, sampler = DataLoader, None
        if self.features is not None:  # in-memory tensors: worker processes would only add latency
            return cls(dataset, batch_size=self.batch_size, sampler=sampler)
        return cls(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=4 if self.num_workers > 0 else None,
            worker_init_fn=ignore_sigint if self.num_workers > 0 else None,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": self.class_names}
