"""The ``key=value`` lines training prints, as SageMaker's metric definitions read them.

Torch-free on purpose: ``launch/`` builds its metric definitions from these names and this regex without
importing Lightning (the launcher runs in environments that have no torch).
"""

from __future__ import annotations

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_top5")
FINAL_KEYS = ("val_loss", "val_acc", "test_loss", "test_acc", "test_acc_top5")
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def metric_regex(key: str) -> str:
    """Regex whose first group captures ``key``'s value in a printed ``key=value`` line."""
    return rf"(?:^|\s){key}={NUMBER}"
