"""A run's per-epoch history, read from the CSV logger's ``metrics.csv``, and the curves drawn from it.

Lightning's CSVLogger writes one row per logging call: epoch-level metrics carry their epoch, while
LearningRateMonitor's ``lr-*`` rows carry only the step they were logged at; they are assigned to the
epoch whose steps they precede. ``*_step`` columns (per-batch noise) and the test stage are left out.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure

Epochs = list[dict[str, float]]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_history(path: str | Path) -> Epochs:
    """One dict per epoch, sorted: ``{"epoch": 0, "train_loss": …, "val_acc": …, "lr-SGD": …}``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs: dict[int, dict[str, float]] = {}
    last_step: dict[int, float] = {}
    lr_rows: list[tuple[float, str, float]] = []
    for row in rows:
        step = _number(row.get("step", ""))
        epoch = _number(row.get("epoch", ""))
        for key, text in row.items():
            value = _number(text)
            if value is None or key in ("epoch", "step") or key.endswith("_step") or key.startswith("test_"):
                continue
            if key.startswith("lr-"):
                lr_rows.append((step if step is not None else -1.0, key, value))
            elif epoch is not None:
                epochs.setdefault(int(epoch), {})[key.removesuffix("_epoch")] = value
        if (
            epoch is not None
            and step is not None
            and any(k.startswith(("train_", "val_")) and _number(v) is not None for k, v in row.items())
        ):
            last_step[int(epoch)] = max(last_step.get(int(epoch), -1.0), step)
    for step, key, value in lr_rows:  # logged at an epoch's start: the first epoch that ends at or after it
        owner = next((e for e in sorted(last_step) if last_step[e] >= step), None)
        if owner is not None and key not in epochs.setdefault(owner, {}):
            epochs[owner][key] = value
    return [{"epoch": float(e), **epochs[e]} for e in sorted(epochs) if epochs[e]]


def _panel(ax, history: Epochs, keys: list[tuple[str, str]], title: str, best: int | None) -> bool:
    drawn = False
    for key, label in keys:
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            drawn = True
    if best is not None:
        ax.axvline(best, color="#888", linestyle="--", linewidth=1, label=f"best epoch ({best})")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="#888")
    return drawn


def curves_figure(history: Epochs, best: int | None, title: str) -> Figure:
    """Loss, accuracy and learning rate per epoch, the best checkpoint's epoch marked."""
    fig = Figure(figsize=(13, 3.8), dpi=100, layout="constrained")
    fig.suptitle(title, fontsize=11)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    _panel(loss_ax, history, [("train_loss", "train"), ("val_loss", "validation")], "Loss", best)
    _panel(
        acc_ax,
        history,
        [("train_acc", "train"), ("val_acc", "validation"), ("val_acc_top5", "validation top-5")],
        "Accuracy",
        best,
    )
    lr_keys = sorted({k for h in history for k in h if k.startswith("lr-")})
    if _panel(lr_ax, history, [(k, k.removeprefix("lr-")) for k in lr_keys], "Learning rate", None):
        lr_ax.set_yscale("log")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
