"""Print one ``epoch=N key=value …`` line per epoch: what SageMaker's metric_definitions scrape.

The keys and the regex SageMaker reads them with live in ``dogbreed.metric_format`` (torch-free, for launch/).
"""

from __future__ import annotations

import math
import sys

import lightning.pytorch as pl

from dogbreed.metric_format import EPOCH_KEYS, FINAL_KEYS, NUMBER, metric_regex

__all__ = ["EPOCH_KEYS", "FINAL_KEYS", "NUMBER", "MetricLines", "format_line", "metric_regex"]


def format_value(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


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
