"""Look at a dataset before training: a PNG grid of random samples with their class names, and a bar
chart of images per class and split (imbalance and missing classes show at a glance).

Uses matplotlib's object API (``Figure`` renders with Agg), so it runs headless and leaves pyplot alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dogbreed.atomic import replacing
from dogbreed.data.images import load_rgb
from dogbreed.data.layout import class_folders, count_images, find_splits, is_image_file
from dogbreed.html import figure_label, figure_text

SPLIT_COLORS = {"train": "#4c72b0", "valid": "#dd8452", "test": "#55a868"}


@dataclass(frozen=True)
class ShowResult:
    grid: Path
    chart: Path
    samples: list[tuple[str, Path]]  # (class folder, image) in grid order
    counts: dict[str, dict[str, int]]  # split -> class folder -> images


def display_name(folder: str) -> str:
    """``045.Cardigan_welsh_corgi`` -> ``Cardigan welsh corgi``: how the dog dataset names its classes
    (escaped for matplotlib: ``$`` in a folder name is drawn, not parsed)."""
    return figure_label(folder)


def pick_samples(split_dir: Path, n: int, seed: int) -> list[tuple[str, Path]]:
    """``n`` images drawn uniformly (without replacement) from the whole split; same seed, same picks."""
    pool = [
        (label, path)
        for label in class_folders(split_dir)
        for path in sorted((split_dir / label).rglob("*"))
        if path.is_file() and is_image_file(path) and not path.name.startswith(".")
    ]
    if not pool:
        raise ValueError(f"{split_dir} holds no images to show")
    return random.Random(seed).sample(pool, min(n, len(pool)))


def _save(fig: Figure, out: Path) -> Path:
    with replacing(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def sample_grid(samples: list[tuple[str, Path]], out: Path, title: str) -> Path:
    """Thumbnails in a near-square grid, each titled with its class; unreadable files are shown as such."""
    cols = math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / cols)
    fig = Figure(figsize=(cols * 2.6, rows * 2.8 + 0.6), dpi=100, layout="constrained")
    fig.suptitle(figure_text(title), fontsize=12)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (label, path) in zip(axes, samples, strict=False):
        try:
            img = load_rgb(path, min_side=256)
            img.thumbnail((320, 320))
            ax.imshow(img)
            ax.set_title(display_name(label), fontsize=10)
        except Exception as exc:  # show it rather than fail: `check` names and quarantines such files
            ax.text(
                0.5,
                0.5,
                f"cannot read\n{path.name}\n{type(exc).__name__}",
                ha="center",
                va="center",
                color="red",
                fontsize=9,
                transform=ax.transAxes,
            )
            ax.set_title(display_name(label), fontsize=10, color="red")
    return _save(fig, out)


def class_chart(counts: dict[str, dict[str, int]], out: Path, title: str) -> Path:
    """Horizontal stacked bars (one row per class, most images first) with the median class size marked."""
    classes = sorted(
        {c for per in counts.values() for c in per},
        key=lambda c: (-sum(per.get(c, 0) for per in counts.values()), c),
    )
    totals = [sum(per.get(c, 0) for per in counts.values()) for c in classes]
    fig = Figure(figsize=(10, max(3.5, 0.2 * len(classes) + 1.6)), dpi=100, layout="constrained")
    ax = fig.subplots()
    left = [0] * len(classes)
    for split, per in counts.items():
        values = [per.get(c, 0) for c in classes]
        ax.barh(
            range(len(classes)), values, left=left, height=0.8, label=split, color=SPLIT_COLORS.get(split)
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    median = sorted(totals)[len(totals) // 2]
    ax.axvline(median, color="black", linestyle="--", linewidth=1, label=f"median {median}")
    ax.set_yticks(
        range(len(classes)), [display_name(c) for c in classes], fontsize=8 if len(classes) > 40 else 10
    )
    ax.invert_yaxis()
    ax.set_ylim(len(classes) - 0.5, -0.5)
    ax.set_xlabel("images")
    ax.set_title(
        f"{figure_text(title)}\n{len(classes)} classes; per class: min {min(totals)}, median {median}, "
        f"max {max(totals)}"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", framealpha=0.95)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def show(
    root: str | Path, out: str | Path = "outputs/data", n: int = 16, split: str = "train", seed: int = 0
) -> ShowResult:
    """Write ``out/samples_<split>.png`` (``n`` random images) and ``out/class_counts.png``."""
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    layout = find_splits(root)
    if split not in layout.splits:
        raise ValueError(f"--split must be one of {', '.join(layout.splits)}, got {split!r}")
    out = Path(out)
    samples = pick_samples(layout.splits[split], n, seed)
    grid = sample_grid(
        samples,
        out / f"samples_{split}.png",
        f"{len(samples)} random {split} images from {layout.root} (seed {seed})",
    )
    counts = {s: {c: count_images(d / c) for c in class_folders(d)} for s, d in layout.splits.items()}
    chart = class_chart(counts, out / "class_counts.png", f"Images per class in {layout.root}")
    return ShowResult(grid, chart, samples, counts)
