"""What the profiler rules share: per-sample views of a run (:class:`Judge`) and the fixes they recommend.

A *datapoint* is one system sample taken while the training loop ran (at least half of its interval
inside a step or its data wait); ``patience`` skips at most ``max_patience_fraction`` of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dogbreed.profiler import advice
from dogbreed.profiler.timeline import ProfileData, sample_phases

MIN_DATAPOINTS = 5  # fewer training-time samples than this: too few to judge
DATA_BOUND_SHARE = 30.0  # % of step time waiting for data from which a run counts as data-bound
NO_GPU = "Does not apply: training used no GPU (it ran on the CPU)."
NO_GPU_UTIL = (
    "GPU utilisation was not measured (NVML unavailable): install nvidia-ml-py (pip install 'dogbreed[gpu]')."
)


@dataclass
class Judge:
    """Derived per-sample arrays shared by the rules."""

    data: ProfileData
    max_patience_fraction: float = 0.2

    def __post_init__(self) -> None:
        train_frac, self.wait_frac_all = sample_phases(self.data)
        self.train_idx = np.flatnonzero(train_frac >= 0.5)
        self.t_all = self.data.system.array("t")

    def patience(self, patience: int, n: int) -> int:
        return min(int(patience), int(self.max_patience_fraction * n))

    def train(self, column: str, patience: int = 0) -> np.ndarray:
        """``column`` at training-time samples, after the (scaled) patience."""
        values = self.data.system.array(column)
        if len(values) == 0:
            return values
        values = values[self.train_idx]
        return values[self.patience(patience, len(values)) :]

    def waiting(self, patience: int = 0) -> np.ndarray:
        return self.wait_frac_all[self.train_idx][self.patience(patience, len(self.train_idx)) :] >= 0.5

    def times(self, patience: int = 0) -> np.ndarray:
        return self.train("t", patience)

    def loader_cpu(self, patience: int = 0) -> np.ndarray:
        """CPU % of the training process tree over the cores its data loaders can use."""
        ctx = self.data.context
        capacity = min(ctx.cores, max(1, ctx.num_workers or 0))
        return self.train("proc_cpu", patience) / capacity

    def idle(self, gpu_threshold: float, patience: int = 0) -> np.ndarray:
        """Accelerator idle: a GPU under ``gpu_threshold`` % or, CPU-only, the loop waiting for data."""
        if self.data.system.gpu_util_measured:
            return np.nanmin(self.train("gpu_util", patience), axis=1) < gpu_threshold
        return self.waiting(patience)

    def data_wait_share(self, skip_steps: int = 0) -> float:
        s = self.data.steps.arrays()
        keep = ~s["profiled"]
        keep[: self.patience(skip_steps, len(keep))] = False
        total = s["total"][keep].sum()
        return float(100.0 * s["wait"][keep].sum() / total) if total > 0 else 0.0


def windows(n: int, window: int) -> Iterator[slice]:
    """Half-overlapping windows of ``window`` datapoints, the last one ending at ``n``."""
    w = max(1, min(window, n))
    ends = list(range(w, n + 1, max(1, w // 2)))
    if not ends or ends[-1] != n:
        ends.append(n)
    for end in ends:
        yield slice(end - w, end)


def data_fixes(ctx: Any, io_bound: bool) -> str:
    return advice.join(
        advice.more_workers(ctx, io_bound=io_bound),
        advice.feature_cache(ctx),
        advice.pin_memory(ctx),
        advice.local_data() if io_bound else advice.lighter_preprocessing(),
    )
