"""dogbreed: fine-tune ImageNet-pretrained CNNs on ImageFolder datasets (Lightning + Hydra).

from dogbreed import BreedClassifier, ImageFolderDataModule, load_model
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["BreedClassifier", "ImageFolderDataModule", "Predictor", "load_model"]

_LAZY = {
    "BreedClassifier": "dogbreed.model",
    "ImageFolderDataModule": "dogbreed.data",
    "Predictor": "dogbreed.predict",
    "load_model": "dogbreed.predict",
}


def __getattr__(name: str) -> Any:
    """Import heavy modules (Lightning, torchvision) only when their names are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dogbreed' has no attribute {name!r}")
