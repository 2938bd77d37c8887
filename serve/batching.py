"""A micro-batcher: items submitted concurrently are run together by one worker thread.

The event loop never runs the model; it submits items and awaits ``concurrent.futures.Future`` objects.
The worker takes everything queued (up to ``max_batch_size``) and waits up to ``max_wait_s`` for more
only while requests it has been told about (``announce``/``arriving``) are still being decoded — so a lone
request never waits, and a burst is gathered into one forward pass.

Admission (``reserve``/``release``) bounds the work a server has taken on before it reads a request's
body; ``stalled_for`` tells a health check how long admitted work has gone without anything finishing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More items are waiting (or reserved) than ``max_queue`` allows; the caller should answer 503."""


class StoppedError(RuntimeError):
    """The batcher is shutting down."""


@dataclass
class Stats:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    failed_batches: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch_size": round(mean, 3)}


class MicroBatcher:
    """Runs ``fn(items) -> results`` (one result per item, same order) over batches of submitted items."""

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        name: str = "inference",
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be ≥ 1 and max_wait_s ≥ 0")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = Stats()
        self._pending: collections.deque[tuple[Any, Future]] = collections.deque()
        self._reserved = 0
        self._busy_since = 0.0  # when work (being decoded or queued) appeared while there was none
        self._progress = 0.0  # when work last finished (a batch, or a caller's ``progressed``)
        self._arriving = 0
        self._running = False  # a batch is inside fn
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def alive(self) -> bool:
        """False once the worker thread has ended (stopped, or killed by something it could not catch)."""
        return self._thread.is_alive()

    def reserve(self, n: int) -> None:
        """Admission: hold ``n`` of the ``max_queue`` slots for items a caller will submit (and then
        ``release``). Raises QueueFullError at once when they are taken, StoppedError when stopping."""
        with self._cond:
            if self._stopping:
                raise StoppedError("server is shutting down")
            if self._reserved + n > self.max_queue:
                raise QueueFullError(f"{self._reserved} images already admitted (limit {self.max_queue})")
            self._reserved += n

    def release(self, n: int) -> None:
        with self._cond:
            self._reserved -= n

    def progressed(self) -> None:
        """A caller finished a step of admitted work (e.g. decoding): the server is not stuck."""
        self._progress = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds work has been decoding (announced), queued or running without anything finishing (0 when
        idle).

        Requests still uploading their body do not count: a slow client is not a stuck server.
        """
        if not self._arriving and not self._pending and not self._running:
            return 0.0
        return time.monotonic() - max(self._busy_since, self._progress)

    def announce(self) -> None:
        """A request will submit soon (it is decoding):
        a forming batch may wait for it. Pair with ``arrived``."""
        with self._cond:
            if not self._arriving and not self._pending:
                self._busy_since = time.monotonic()
            self._arriving += 1

    def arrived(self) -> None:
        """The announced request has submitted (or given up)."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """``announce`` on entry, ``arrived`` on exit."""
        self.announce()
        try:
            yield
        finally:
            self.arrived()

    def submit(self, items: Sequence[Any]) -> list[Future]:
        """Queue ``items``; one Future per item. Raises QueueFullError or StoppedError at once."""
        futures = [Future() for _ in items]
        with self._cond:
            if self._stopping:
                raise StoppedError("server is shutting down")
            if len(self._pending) + len(items) > self.max_queue:
                raise QueueFullError(f"{len(self._pending)} images already queued (limit {self.max_queue})")
            if not self._pending and not self._arriving:
                self._busy_since = time.monotonic()
            self._pending.extend(zip(items, futures, strict=True))
            self._cond.notify_all()
        return futures

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the batch in progress, fail what is still queued, join the worker."""
        with self._cond:
            self._stopping = True
            leftover = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for _, future in leftover:
            if future.set_running_or_notify_cancel():
                future.set_exception(StoppedError("server is shutting down"))
        self._thread.join(timeout)

    def _next_batch(self) -> list[tuple[Any, Future]] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < self.max_batch_size and self._arriving > 0 and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(self.max_batch_size, len(self._pending))
            return [self._pending.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
            self.stats.cancelled += len(batch) - len(live)
            if live:
                self._running = True
                try:
                    self._execute(live)
                finally:
                    self._running = False
                    self._progress = time.monotonic()

    def _execute(self, live: list[tuple[Any, Future]]) -> None:
        try:
            results = self.fn([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
        except Exception as e:  # noqa: BLE001 — a failing batch must not kill the worker
            self.stats.failed_batches += 1
            if len(live) == 1:
                log.exception("inference failed")
                live[0][1].set_exception(e)
                return
            for one in live:  # isolate the item that broke the batch; the others still get answers
                self._execute([one])
            return
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)
