"""A test-only callback that makes each training step take a while and says which step finished, so a test
can send a real signal to a real training process in the middle of an epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl


class SlowSteps(pl.Callback):
    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        print(f"slow_steps: epoch={trainer.current_epoch} step={trainer.global_step}", flush=True)
        time.sleep(self.seconds)
