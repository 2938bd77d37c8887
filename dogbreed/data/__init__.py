"""Dataset handling: the Lightning DataModule, layout checks, image decoding, synthetic data.

Names are imported lazily so `python -m dogbreed.data check` does not pay for importing Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatasetError", "ImageFolderDataModule"]
_LAZY = {"ImageFolderDataModule": "dogbreed.data.datamodule", "DatasetError": "dogbreed.data.layout"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dogbreed.data' has no attribute {name!r}")
