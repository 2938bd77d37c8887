"""Print one ``epoch=N key=value …`` line per epoch (what SageMaker's metric_definitions scrape), and keep
each epoch's validation numbers so the run can name the best epoch's and the last epoch's apart.

The keys and the regex SageMaker reads them with live in ``dogbreed.metric_format`` (torch-free, for launch/).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning.pytorch as pl

from dogbreed.metric_format import EPOCH_KEYS, FINAL_KEYS, LAST_PREFIX, NUMBER, VAL_KEYS, metric_regex

__all__ = ["EPOCH_KEYS", "FINAL_KEYS", "NUMBER", "MetricLines", "format_line", "metric_regex"]


def format_value(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def format_line(values: dict[str, float | int]) -> str:
    return " ".join(f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in values.items())


def _kept(trainer: pl.Trainer) -> str | None:
    """The checkpoint the run's ModelCheckpoint keeps as best; None when the latest weights are what the run
    tests (no checkpoint callback, or one without a monitor)."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None or getattr(ckpt, "monitor", None) is None:
        return None
    return getattr(ckpt, "best_model_path", "") or None


def _read(metrics: dict[str, Any], key: str) -> float | None:
    for name in (key, f"{key}_epoch"):
        if name in metrics:
            return float(metrics[name])
    return None


class MetricLines(pl.Callback):
    """At the end of each training epoch (after its validation) print
    ``epoch=… train_loss=… val_loss=… val_acc=…``. :meth:`summary` names the validation numbers of the epoch
    whose checkpoint ModelCheckpoint keeps (``best_epoch``, ``val_*``: the model the run tests and exports)
    and of the last epoch (``last_val_*``). Its state travels in checkpoints, so a resumed run knows both."""

    def __init__(self, keys: tuple[str, ...] = EPOCH_KEYS) -> None:
        self.keys = tuple(keys)
        self.history: dict[int, dict[str, float]] = {}  # epoch -> its val_* values
        self.best_epoch: int | None = None
        self._kept: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs ModelCheckpoint's hooks after every other callback's: this epoch is recorded before
        # the checkpoint that may keep it is saved (and so is in that checkpoint's state).
        if trainer.sanity_checking:
            return
        found = {key: _read(trainer.callback_metrics, key) for key in VAL_KEYS}
        self.history[trainer.current_epoch] = {k: v for k, v in found.items() if v is not None}

    def _settle(self, trainer: pl.Trainer) -> None:
        """A new best checkpoint since the last look is the newest validated epoch's."""
        kept = _kept(trainer)
        if self.history and (kept is None or kept != self._kept):
            self.best_epoch = max(self.history)
        self._kept = kept

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._settle(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._settle(trainer)
        if not trainer.is_global_zero:
            return
        values: dict[str, float | int] = {"epoch": trainer.current_epoch}
        for key in self.keys:
            value = _read(trainer.callback_metrics, key)
            if value is not None:
                values[key] = value
        print(format_line(values), file=sys.stdout, flush=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._settle(trainer)

    def summary(self) -> dict[str, float | int | None]:
        """``best_epoch`` and its ``val_*``, and the last epoch's as ``last_val_*`` (None before any
        validation)."""
        best = self.history.get(self.best_epoch, {}) if self.best_epoch is not None else {}
        last = self.history[max(self.history)] if self.history else {}
        return {
            "best_epoch": self.best_epoch,
            **{key: best.get(key) for key in VAL_KEYS},
            **{f"{LAST_PREFIX}{key}": last.get(key) for key in VAL_KEYS},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": dict(self.history), "best_epoch": self.best_epoch, "kept": self._kept}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): dict(v) for k, v in (state_dict.get("history") or {}).items()}
        self.best_epoch = state_dict.get("best_epoch")
        self._kept = state_dict.get("kept")
