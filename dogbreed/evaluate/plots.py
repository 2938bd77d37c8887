"""The report's figures: confusion block, reliability diagram, top-loss grid (matplotlib, no pyplot state).

Figures are built on ``matplotlib.figure.Figure`` directly, so nothing depends on a GUI backend or on
global pyplot state (safe inside a training process and in threads).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from matplotlib.figure import Figure

from dogbreed.data.images import load_rgb
from dogbreed.html import figure_label


def short_name(name: str, width: int = 28) -> str:
    """``'012.Border_collie'`` → ``'Border collie'``, cut to ``width`` characters (safe for matplotlib)."""
    return figure_label(name, width)


def to_png(fig: Figure, dpi: int = 100, tight: bool = True) -> bytes:
    """PNG bytes; zlib level 3 writes photo grids about twice as fast as the default 6 for ~3% more bytes."""
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None, pil_kwargs={"compress_level": 3}
    )
    return buf.getvalue()


def confusion_figure(confusion: torch.Tensor, class_names: list[str], classes: list[int]) -> Figure:
    """Counts for the ``classes`` block (rows true, columns predicted),
    coloured by share of the true class."""
    cm = confusion.long()
    idx = torch.tensor(classes, dtype=torch.long)
    block = cm[idx][:, idx].numpy()
    support = cm.sum(dim=1)[idx].clamp(min=1).numpy()
    share = block / support[:, None]
    k = len(classes)
    side = max(4.0, 0.42 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    labels = [short_name(class_names[i]) for i in classes]
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for r in range(k):
        for c in range(k):
            if block[r, c]:
                ax.text(
                    c,
                    r,
                    str(block[r, c]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[r, c] > 0.5 else "#222",
                )
    whole = len(class_names)
    ax.set_title(
        f"All {whole} classes"
        if k == whole
        else f"The {k} most-confused of {whole} classes (full matrix in the CSV)",
        fontsize=10,
    )
    return fig


def reliability_figure(calibration: dict) -> Figure:
    """Accuracy against confidence per bin (with the gap to the diagonal),
    and how many images each bin holds."""
    bins = calibration["bins"]
    n = len(bins)
    centers = np.array([(b["lower"] + b["upper"]) / 2 for b in bins])
    filled = [b["count"] > 0 for b in bins]
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
    fig = Figure(figsize=(5.5, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n
    top.bar(centers[filled], acc[filled], width=width, edgecolor="#1f4e79", color="#5b9bd5", label="accuracy")
    gap_base = np.minimum(acc, conf)[filled]
    gap = np.abs(conf - acc)[filled]
    top.bar(
        centers[filled],
        gap,
        bottom=gap_base,
        width=width,
        color="#c0504d",
        alpha=0.35,
        hatch="//",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="#555", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram — ECE {calibration['ece']:.3f} ({n} bins)", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["count"] for b in bins], width=width, color="#7f7f7f", edgecolor="#444")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    return fig


def _thumbnail(path: str, size: int) -> np.ndarray | None:
    """The image shrunk (or enlarged) to fit ``size`` × ``size``; None when it cannot be read."""
    try:
        img = load_rgb(path, min_side=size)
    except OSError:
        return None
    scale = size / max(img.size)
    return np.asarray(img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale)))))


def top_losses_figure(items: list[dict], columns: int = 4, thumb: int = 200) -> Figure:
    """A grid of the worst images: true and predicted class, p(predicted), p(true), loss.

    The thumbnails are pasted into one canvas drawn on a single axes: many small axes would make this
    the slowest part of the report.
    """
    columns = max(1, min(columns, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    pad, title = 12, 48
    cell_w, cell_h = thumb + pad, title + thumb + pad
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    dpi = 100
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    for k, item in enumerate(items):
        r, c = divmod(k, columns)
        x0, y0 = c * cell_w + pad // 2, r * cell_h + title
        pixels = _thumbnail(item["path"], thumb)
        if pixels is None:
            ax.text(x0 + thumb / 2, y0 + thumb / 2, "unreadable", ha="center", va="center", fontsize=8)
        else:
            h, w = pixels.shape[:2]
            top, left = y0 + (thumb - h) // 2, x0 + (thumb - w) // 2
            canvas[top : top + h, left : left + w] = pixels
        wrong = item["true"] != item["predicted"]
        ax.text(
            x0 + thumb / 2,
            y0 - 4,
            f"true: {short_name(item['true'])}\npred: {short_name(item['predicted'])} "
            f"({item['p_predicted']:.2f})\np(true) {item['p_true']:.2f} · loss {item['loss']:.2f}",
            ha="center",
            va="bottom",
            fontsize=8,
            color="#b00020" if wrong else "#1b7f3b",
        )
    ax.imshow(canvas, interpolation="nearest")
    return fig
