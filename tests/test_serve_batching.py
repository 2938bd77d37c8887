"""serve/batching.py: concurrent submissions share a forward pass;
nobody waits for requests that don't exist."""

from __future__ import annotations

import threading
import time

import pytest

from serve.batching import MicroBatcher, QueueFullError, StoppedError


class Recorder:
    """A batch function that records batch contents and can be held closed to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{item}!" for item in items]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def hold_worker(batcher: MicroBatcher, recorder: Recorder) -> list:
    """Occupy the worker with one item so that later submissions queue up behind it."""
    recorder.gate.clear()
    first = batcher.submit(["first"])
    assert recorder.entered.wait(5)
    return first


def test_items_queued_while_the_model_runs_form_one_batch(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_s=0.0)
    try:
        first = hold_worker(batcher, recorder)
        futures = batcher.submit(list("abcdef"))
        recorder.gate.set()
        assert [f.result(5) for f in first + futures] == ["first!", *[f"{c}!" for c in "abcdef"]]
        assert recorder.batches == [["first"], list("abcd"), list("ef")]
        assert batcher.stats.as_dict()["largest_batch"] == 4
    finally:
        batcher.stop()


def test_a_lone_request_does_not_wait_for_the_batch_to_fill(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=16, max_wait_s=2.0)
    try:
        started = time.monotonic()
        assert batcher.submit(["x"])[0].result(5) == "x!"
        assert time.monotonic() - started < 1.0  # max_wait_s is 2 s: it did not wait
    finally:
        batcher.stop()


def test_a_forming_batch_waits_for_announced_requests(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=2.0)
    try:
        with batcher.arriving():  # a request still decoding
            early = batcher.submit(["early"])
            time.sleep(0.2)
            late = batcher.submit(["late"])
        assert [f.result(5) for f in early + late] == ["early!", "late!"]
        assert recorder.batches == [["early", "late"]]
    finally:
        batcher.stop()


def test_cancelled_items_are_skipped(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=0.0)
    try:
        hold_worker(batcher, recorder)
        gone, kept = batcher.submit(["gone", "kept"])
        assert gone.cancel()
        recorder.gate.set()
        assert kept.result(5) == "kept!"
        assert recorder.batches[-1] == ["kept"] and batcher.stats.cancelled == 1
    finally:
        batcher.stop()


def test_a_failing_item_does_not_fail_its_batch_mates(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=0.0)
    try:
        hold_worker(batcher, recorder)
        good, bad, other = batcher.submit(["good", "bad", "other"])
        recorder.gate.set()
        assert (good.result(5), other.result(5)) == ("good!", "other!")
        with pytest.raises(ValueError, match="bad item"):
            bad.result(5)
        assert batcher.submit(["after"])[0].result(5) == "after!"  # the worker survived
    finally:
        batcher.stop()


def test_full_queue_and_shutdown_refuse_new_work(recorder):
    batcher = MicroBatcher(recorder, max_batch_size=2, max_wait_s=0.0, max_queue=3)
    hold_worker(batcher, recorder)
    queued = batcher.submit(["a", "b", "c"])
    with pytest.raises(QueueFullError, match="limit 3"):
        batcher.submit(["d"])
    threading.Timer(0.2, recorder.gate.set).start()
    batcher.stop()
    for future in queued:
        with pytest.raises(StoppedError):
            future.result(5)
    with pytest.raises(StoppedError):
        batcher.submit(["late"])
