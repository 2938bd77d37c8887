"""`python -m dogbreed.data show`: a sample grid with class names and a per-class bar chart,
written as PNGs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.data.__main__ import main
from dogbreed.data.show import display_name, pick_samples, show


def test_grid_and_chart_are_written(synthetic_root: Path, tmp_path: Path, capsys):
    assert (
        main(
            [
                "show",
                str(synthetic_root),
                "--out",
                str(tmp_path),
                "-n",
                "9",
                "--split",
                "valid",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    grid, chart = tmp_path / "samples_valid.png", tmp_path / "class_counts.png"
    assert str(grid) in out and str(chart) in out
    with Image.open(grid) as g, Image.open(chart) as c:
        assert g.format == c.format == "PNG"
        assert g.width >= 600 and g.height >= 600  # 3 x 3 thumbnails, readable size
        pixels = np.asarray(g.convert("L"))
        assert pixels.std() > 20  # actual pictures, not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "class_counts.png",
        "samples_valid.png",
    ]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert grid.stat().st_mode & 0o777 == 0o666 & ~umask


def test_samples_follow_split_and_seed(synthetic_root: Path, tmp_path: Path):
    a = show(synthetic_root, tmp_path / "a", n=6, split="test", seed=1)
    b = show(synthetic_root, tmp_path / "b", n=6, split="test", seed=1)
    c = show(synthetic_root, tmp_path / "c", n=6, split="test", seed=2)
    assert a.samples == b.samples != c.samples
    assert all(path.is_relative_to(synthetic_root / "test" / label) for label, path in a.samples)
    assert len({path for _, path in a.samples}) == 6
    assert a.counts["train"] == {name: 12 for name in a.counts["train"]} and len(a.counts["test"]) == 4
    assert len(pick_samples(synthetic_root / "train", 500, seed=0)) == 48  # capped at the split's size


def test_unreadable_sample_is_drawn_not_fatal(synthetic_root: Path, tmp_path: Path):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "ds"))
    for f in (root / "valid").rglob("*.jpg"):
        f.write_bytes(b"broken")
    result = show(root, tmp_path / "out", n=4, split="valid")
    assert result.grid.is_file() and len(result.samples) == 4


def test_bad_options_are_named(synthetic_root: Path, tmp_path: Path, capsys):
    with pytest.raises(ValueError, match="-n must be >= 1"):
        show(synthetic_root, tmp_path, n=0)
    assert main(["show", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_display_name():
    assert display_name("045.Cardigan_welsh_corgi") == "Cardigan welsh corgi"
    assert display_name("tabby") == "tabby"
