"""Dataset handling: the Lightning DataModule, layout checks, image decoding, synthetic data."""

from dogbreed.data.datamodule import ImageFolderDataModule
from dogbreed.data.layout import DatasetError

__all__ = ["DatasetError", "ImageFolderDataModule"]
