"""Lightning's RichProgressBar where someone watches a terminal, and nothing where stdout is a log file."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class TerminalProgressBar(RichProgressBar):
    """RichProgressBar, disabled when stdout is not a terminal (a log file, a SageMaker job's CloudWatch
    stream: the per-epoch metric lines say enough there) and kept so: Lightning's LR finder re-enables the bar
    after its own run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._terminal = sys.stdout.isatty()
        if not self._terminal:
            self.disable()

    def enable(self) -> None:
        if self._terminal:
            super().enable()
