"""A quiet, honest console: what a healthy run prints is ours and actionable.

Third-party notices a dogbreed user can do nothing about are filtered here, by their exact text, so any
other warning still shows: PyTorch's deprecation of TorchScript (our serving format, by design: see
README "Serving"), a PyTorch deprecation Lightning 2.6 triggers inside its own code, and Lightning's
advertisement for its cloud logger. The torch profiler's own C++ log lines (kineto's ``USDT: …
profiler_start`` and, on machines without a GPU, ``ERROR: … gpuGetDeviceCount failed``) are switched
off by the profiler callback for CPU runs (``KINETO_LOG_LEVEL``; set it yourself to see them).
"""

from __future__ import annotations

import logging
import warnings

# (message regex, category): matched against the start of the warning text.
THIRD_PARTY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`torch\.jit\.\w+` is deprecated", FutureWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
LIGHTNING_TIP = "💡 Tip:"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP)


def quiet_third_party(resuming: bool = False) -> None:
    """Install the filters (idempotent). ``resuming``: a resumed run writes into its own checkpoint
    folder again, so Lightning's "Checkpoint directory … exists and is not empty" is expected there."""
    for message, category in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if resuming:
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
