"""A training DataLoader that resumes mid-epoch: a resumed run trains the rest of the epoch, not its start.

Lightning saves and restores the state of every train DataLoader that has ``state_dict`` /
``load_state_dict`` (and warns that results are unreliable for one that has not). Here the order of epoch
``e`` is a permutation drawn from ``seed + e`` alone, so the position is two numbers, the epoch and the
batches it has yielded; after a restore the sampler skips those indices (no image is read for them).

The state also holds torch's CPU random state at the save, and the resumed epoch restores it before its
first batch: the rest of the epoch draws the same dropout masks and main-process augmentations as an
uninterrupted run would. Each epoch's worker seeds come from ``seed + e`` too, not from that state. Not
replayed: augmentations in worker processes (a worker's stream restarts with a resume) and, on a GPU,
dropout, which draws from the CUDA generator.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by ``seed + epoch`` when ``shuffle``; ``resume`` skips a prefix once."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.epoch = 0
        self.skip = 0  # indices of ``epoch`` to leave out (they were trained before an interruption)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch; a skip only applies to the epoch it was saved in."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = int(epoch)

    def resume(self, epoch: int, skip: int) -> None:
        """Continue epoch ``epoch`` after its first ``skip`` indices (the next epoch when all were seen)."""
        self.epoch, self.skip = (int(epoch) + 1, 0) if skip >= self.n else (int(epoch), int(skip))

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.order()[skip:])


class ResumableDataLoader(DataLoader):
    """``DataLoader`` whose state is (epoch, batches yielded in it); give it ``sampler=EpochSampler(…)``.

    Lightning reads the state when it saves a checkpoint (no batch is prefetched ahead of the loop for a
    loader with a length, so "yielded" is "trained on") and loads it before the resumed epoch starts.
    """

    _epoch = 0
    _batches = 0
    _resume_rng: torch.Tensor | None = None  # torch's random state at the save this run resumes from

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        if isinstance(sampler, EpochSampler):  # overfit_batches swaps in a SequentialSampler
            self._epoch, self._batches = sampler.epoch, sampler.skip // max(1, self.batch_size or 1)
            # the workers' base seed from the epoch, so that starting an epoch draws nothing from torch's
            # global random state (a resumed epoch starts at another point of that stream)
            self.generator = torch.Generator().manual_seed(sampler.seed + sampler.epoch)
        else:
            self._epoch, self._batches = 0, 0
        if self._resume_rng is not None:
            torch.set_rng_state(self._resume_rng)
            self._resume_rng = None
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self._epoch), "batches": int(self._batches), "rng": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if isinstance(self.sampler, EpochSampler):
            batches = int(state_dict.get("batches", 0))
            self.sampler.resume(int(state_dict.get("epoch", 0)), batches * int(self.batch_size or 1))
        self._resume_rng = state_dict.get("rng")  # absent in checkpoints from before it was saved


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C in a terminal reaches the whole process group; the training
    process handles it (checkpoint, then stop) and shuts its workers down, so they must not die first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
