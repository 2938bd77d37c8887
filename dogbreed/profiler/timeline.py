"""Per-step timing (data wait vs compute) and the data the profiler rules judge.

Step ``i``'s *data wait* runs from the end of step ``i-1`` (``on_train_batch_end``), or from the start
of the epoch / the end of a mid-epoch validation, to ``on_train_batch_start`` of step ``i``: Lightning
fetches the batch and moves it to the device in that gap. Its *compute* runs from
``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward, optimizer step). All times are
``time.perf_counter()`` seconds, the clock the system sampler uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dogbreed.profiler.sampler import SystemSeries


@dataclass
class StepTimeline:
    step: list[int] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    wait_start: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    batch_size: list[int] = field(default_factory=list)
    profiled: list[bool] = field(default_factory=list)  # ran under torch.profiler (slower, not judged)

    def __len__(self) -> int:
        return len(self.step)

    def arrays(self) -> dict[str, np.ndarray]:
        start, end, wait_start = (np.asarray(x, dtype=float) for x in (self.start, self.end, self.wait_start))
        return {
            "step": np.asarray(self.step, dtype=int),
            "epoch": np.asarray(self.epoch, dtype=int),
            "wait_start": wait_start,
            "start": start,
            "end": end,
            "wait": start - wait_start,
            "compute": end - start,
            "total": end - wait_start,
            "batch_size": np.asarray(self.batch_size, dtype=int),
            "profiled": np.asarray(self.profiled, dtype=bool),
        }


class StepTimer:
    """Turns Lightning's batch hooks into a :class:`StepTimeline`; a few ``perf_counter`` reads per step."""

    def __init__(self) -> None:
        self.timeline = StepTimeline()
        self._resume_at: float | None = None
        self._open: tuple[int, int, float, float, int, bool] | None = None

    def resume(self, t: float) -> None:
        """The loop is about to wait for a batch (epoch start, end of a mid-epoch validation)."""
        self._resume_at = t

    def batch_start(self, t: float, step: int, epoch: int, batch_size: int, profiled: bool = False) -> None:
        wait_start = t if self._resume_at is None else self._resume_at
        self._open = (step, epoch, wait_start, t, batch_size, profiled)

    def batch_end(self, t: float) -> None:
        if self._open is None:
            return
        step, epoch, wait_start, start, batch_size, profiled = self._open
        tl = self.timeline
        tl.step.append(step)
        tl.epoch.append(epoch)
        tl.wait_start.append(wait_start)
        tl.start.append(start)
        tl.end.append(t)
        tl.batch_size.append(batch_size)
        tl.profiled.append(profiled)
        self._open = None
        self._resume_at = t


@dataclass
class RunContext:
    """What the recommendations need to speak in this project's config keys."""

    cores: int = 1
    device: str = "cpu"
    num_workers: int | None = None
    batch_size: int | None = None
    pin_memory: bool | None = None
    precision: str = "32-true"
    frozen: bool | None = None
    feature_cache: bool | None = None  # True: training from cached features; False: off; None: no such option
    bf16_capable: bool = False
    data_verify: bool | None = None
    num_sanity_val_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProfileData:
    """Everything the rules judge: system samples, step timeline, run context and job timing."""

    system: SystemSeries
    steps: StepTimeline
    context: RunContext
    job_start: float  # perf_counter clock; the process start for the first fit in a process
    fit_start: float
    fit_end: float
    top_ops: list[dict[str, Any]] = field(default_factory=list)
    # the profiler's own cost: sampler thread CPU seconds and seconds spent in its step hooks
    overhead: dict[str, float] = field(default_factory=dict)


def covered(starts: np.ndarray, ends: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of ``[a_k, b_k]`` covered by the sorted, disjoint intervals ``[starts, ends]``, per k."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(starts) == 0:
        return np.zeros_like(a)
    lengths = np.maximum(ends - starts, 0.0)
    before = np.concatenate([[0.0], np.cumsum(lengths)])

    def upto(x: np.ndarray) -> np.ndarray:
        i = np.searchsorted(starts, x, side="right") - 1
        j = np.clip(i, 0, None)
        inside = np.clip(x - starts[j], 0.0, lengths[j])
        return np.where(i >= 0, before[j] + inside, 0.0)

    return np.maximum(upto(b) - upto(a), 0.0)


def sample_phases(data: ProfileData) -> tuple[np.ndarray, np.ndarray]:
    """Per system sample: (fraction of its interval inside the training loop, data-wait fraction of that)."""
    t = data.system.array("t")
    if len(t) == 0 or len(data.steps) == 0:
        return np.zeros(len(t)), np.zeros(len(t))
    s = data.steps.arrays()
    a = np.concatenate([[t[0] - data.system.interval_s], t[:-1]])
    width = np.maximum(t - a, 1e-9)
    train = covered(s["wait_start"], s["end"], a, t)
    wait = covered(s["wait_start"], s["start"], a, t)
    return train / width, np.divide(wait, train, out=np.zeros_like(wait), where=train > 0)


def step_at(data: ProfileData, times: np.ndarray) -> np.ndarray:
    """The global step running (or being waited for) at each time."""
    s = data.steps.arrays()
    if len(s["step"]) == 0:
        return np.zeros(len(times), dtype=int)
    i = np.clip(np.searchsorted(s["end"], times, side="left"), 0, len(s["step"]) - 1)
    return s["step"][i]
