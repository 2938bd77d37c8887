"""Class folder names (and paths) with characters matplotlib treats as markup draw as they are: `$…$`
would start mathtext, where `_`, `^` and `\\` are markup and a stray one fails the whole figure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dogbreed.data.show import show
from dogbreed.evaluate.plots import confusion_figure, to_png, top_losses_figure
from dogbreed.html import figure_label

ODD = ["001.Cost_$5^x$", "002.$\\alpha_b$", "003.a^b_c", "004.$$"]


@pytest.fixture(scope="module")
def odd_root(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odd $path$") / "data"
    shutil.copytree(synthetic_root, root)
    for split in ("train", "valid", "test"):
        for old, new in zip(sorted(p.name for p in (root / split).iterdir()), ODD, strict=True):
            (root / split / old).rename(root / split / new)
    return root


def test_labels_keep_every_character():
    assert figure_label("001.Cost_$5^x$") == "Cost \\$5^x\\$"  # drawn as "Cost $5^x$"
    assert figure_label("012.Border_collie") == "Border collie"
    assert figure_label("003.a^b_c", width=3) == "a^…"


def test_data_show_draws_markup_class_names_and_paths(odd_root, tmp_path):
    result = show(odd_root, tmp_path / "figures", n=8)
    assert sorted(result.counts["train"]) == ODD
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in (result.grid, result.chart))


def test_evaluation_figures_draw_markup_class_names(odd_root):
    confusion = torch.tensor([[3, 1, 0, 0], [0, 4, 0, 0], [1, 0, 2, 1], [0, 0, 0, 4]])
    assert to_png(confusion_figure(confusion, ODD, [0, 1, 2, 3]))[:4] == b"\x89PNG"
    image = next((odd_root / "test" / ODD[0]).iterdir())
    items = [
        {
            "path": image,
            "true": ODD[i],
            "predicted": ODD[-1 - i],
            "p_predicted": 0.9,
            "p_true": 0.05,
            "loss": 3.0,
        }
        for i in range(4)
    ]
    assert to_png(top_losses_figure(items))[:4] == b"\x89PNG"
