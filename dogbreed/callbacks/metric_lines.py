"""Print one ``epoch=N key=value …`` line per epoch: what SageMaker's metric_definitions scrape.

``EPOCH_KEYS`` (these lines), ``FINAL_KEYS`` (the last lines of a run) and ``metric_regex`` are the single
source of truth for those regexes: launch/ builds SageMaker's metric_definitions from them.
"""

from __future__ import annotations

import math
import sys

import lightning.pytorch as pl

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_top5")
FINAL_KEYS = ("val_loss", "val_acc", "test_loss", "test_acc", "test_acc_top5")
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def format_value(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def metric_regex(key: str) -> str:
    """Regex whose first group captures ``key``'s value in a printed ``key=value`` line."""
    return rf"(?:^|\s){key}={NUMBER}"


def format_line(values: dict[str, float]) -> str:
    return " ".join(f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in values.items())


class MetricLines(pl.Callback):
    """At the end of each training epoch (after its validation),
    print ``epoch=… train_loss=… val_loss=… val_acc=…``."""

    def __init__(self, keys: tuple[str, ...] = EPOCH_KEYS) -> None:
        self.keys = tuple(keys)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        values: dict[str, float | int] = {"epoch": trainer.current_epoch}
        for key in self.keys:
            for name in (key, f"{key}_epoch"):
                if name in metrics:
                    values[key] = float(metrics[name])
                    break
        print(format_line(values), file=sys.stdout, flush=True)
