"""The ``key=value`` lines training prints, as metrics.json names them and SageMaker's metric definitions read
them: the one list of names both use.

Torch-free on purpose: ``launch/`` builds its metric definitions from these names and this regex without
importing Lightning (the launcher runs in environments that have no torch).
"""

from __future__ import annotations

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_top5")
# Validation numbers at the end of the run: plain val_* are the epoch whose checkpoint the run tests and
# exports (best_epoch, the best by callbacks.model_checkpoint.monitor), last_val_* the last epoch's.
VAL_KEYS = tuple(key for key in EPOCH_KEYS if key.startswith("val_"))
LAST_PREFIX = "last_"
FINAL_KEYS = (
    "best_epoch",
    "val_loss",
    "val_acc",
    f"{LAST_PREFIX}val_loss",
    f"{LAST_PREFIX}val_acc",
    "test_loss",
    "test_acc",
    "test_acc_top5",
)
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def metric_regex(key: str) -> str:
    """Regex whose first group captures ``key``'s value in a printed ``key=value`` line."""
    return rf"(?:^|\s){key}={NUMBER}"
