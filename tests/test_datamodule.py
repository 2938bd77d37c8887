"""ImageFolderDataModule: split discovery, fail-before-training checks, image modes,
transforms from weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.backbones import preprocess_for
from dogbreed.data import DatasetError, ImageFolderDataModule
from dogbreed.data.images import load_rgb, to_rgb


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DatasetError) as err:
        ImageFolderDataModule(tmp_path / "dogImages")
    msg = str(err.value)
    assert str((tmp_path / "dogImages").resolve()) in msg
    assert "python -m dogbreed.data download" in msg


def test_missing_split_is_named(synthetic_root, tmp_path):
    root = copy(synthetic_root, tmp_path / "ds")
    shutil.rmtree(root / "valid")
    with pytest.raises(DatasetError, match="valid/val"):
        ImageFolderDataModule(root)


def test_val_alias_is_accepted(synthetic_root, tmp_path):
    root = copy(synthetic_root, tmp_path / "ds")
    (root / "valid").rename(root / "val")
    dm = ImageFolderDataModule(root, num_workers=0)
    assert dm.layout.splits["valid"] == root / "val"


def test_differing_class_sets_name_the_folders(synthetic_root, tmp_path):
    root = copy(synthetic_root, tmp_path / "ds")
    victim = sorted((root / "test").iterdir())[0]
    shutil.rmtree(victim)
    with pytest.raises(DatasetError) as err:
        ImageFolderDataModule(root)
    assert victim.name in str(err.value) and str(root / "test") in str(err.value)


def test_empty_class_is_rejected(synthetic_root, tmp_path):
    root = copy(synthetic_root, tmp_path / "ds")
    victim = sorted((root / "train").iterdir())[1]
    for f in victim.iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="empty class folder.*" + victim.name):
        ImageFolderDataModule(root)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "P_transparent", "I;16", "LA"])
def test_every_image_mode_becomes_rgb(mode, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "P_transparent":
        img = rgb.convert("P")
        img.info["transparency"] = 0
        path = tmp_path / "x.png"
        img.save(path, transparency=0)
    elif mode == "I;16":
        img = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
        assert img.mode.startswith("I;16")
        path = tmp_path / "x.png"
        img.save(path)
    else:
        img = rgb.convert(mode)
        path = tmp_path / ("x.jpg" if mode in ("L", "CMYK") else "x.png")
        img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    assert to_rgb(img).mode == "RGB"


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_jpeg_draft_reduces_large_images_but_keeps_the_needed_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1500), (10, 200, 30)).save(path)
    small = load_rgb(path, min_side=256)
    assert min(small.size) >= 256 and small.size[0] < 2000


@pytest.mark.parametrize(
    ("backbone", "weights", "resize", "crop"),
    [
        ("resnet50", "IMAGENET1K_V2", 232, 224),
        ("resnet50", "IMAGENET1K_V1", 256, 224),
        ("mobilenet_v2", "IMAGENET1K_V1", 256, 224),
        ("efficientnet_b0", "IMAGENET1K_V1", 256, 224),
    ],
)
def test_transforms_come_from_the_weights_metadata(backbone, weights, resize, crop):
    pre = preprocess_for(backbone, weights)
    assert (pre.resize_size, pre.crop_size) == (resize, crop)
    assert pre.mean == pytest.approx([0.485, 0.456, 0.406])


def test_loaders_apply_the_preprocess_and_are_seeded(synthetic_root):
    pre = preprocess_for("resnet50", "IMAGENET1K_V2")
    dm = ImageFolderDataModule(synthetic_root, batch_size=8, num_workers=0, preprocess=pre, seed=3)
    dm.setup("fit")
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[1:] == (3, 224, 224)
    first = [y.tolist() for _, y in dm.train_dataloader()]
    again = [y.tolist() for _, y in dm.train_dataloader()]
    assert first != [] and first == again  # same seed → same shuffling order on each new loader


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (4, 3), (32, 8)])
def test_num_workers_default_leaves_a_core_free(monkeypatch, synthetic_root, cores, workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cores)))
    dm = ImageFolderDataModule(synthetic_root)
    assert dm.num_workers == workers
    assert ImageFolderDataModule(synthetic_root, num_workers=0).num_workers == 0
