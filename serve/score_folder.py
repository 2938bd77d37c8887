"""Score every image under folders (or globs) into a predictions file that a rerun resumes.

``python -m serve.predict DIR_OR_GLOB... --out predictions.csv|.jsonl`` lands here; torch + Pillow only.

- **Locally** (``--model``): decoder threads read each file, decode it (``serve.inference.decode_image``, the
  endpoint's decoder) and preprocess it (``Runner.preprocess``: resize, crop, normalise) while the calling
  thread runs the network on batches (``Runner.forward``, the server's fast path). Threads, not processes:
  Pillow and torch release the GIL while they work, and worker processes (a torch and model copy each,
  every tensor pickled across) were 1.5× slower on 2 free cores and only sometimes faster on a busy
  machine (``bench/predict.py``, README "Scoring a folder").
- **Through an endpoint** (``--endpoint``/``--sagemaker-endpoint``): ``--concurrency`` threads each post
  one image at a time; the server batches them.

Rows are written in input order, a chunk at a time (``serve/rows.py``); an image that cannot be read,
decoded or classified becomes a row with an ``error``. Images already in the file are skipped.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from serve.rows import PredictionsFile, error_row, prediction_row

if TYPE_CHECKING:
    from serve.runner import Runner

# torchvision ImageFolder's extensions (serve/ cannot import dogbreed.data.layout; a test keeps them equal)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GLOB_CHARS = "*?["


class PredictError(RuntimeError):
    """An image (or the whole run) could not be classified; the message says why and is shown as is."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_split(cores: int) -> tuple[int, int]:
    """(decoder threads, torch threads) for ``cores``: half the cores decode (at least two: one alone leaves
    the network waiting whenever it is descheduled) and torch gets the rest (at least one: more torch
    threads than free cores make every forward pass wait for a descheduled one)."""
    decoders = max(2, cores // 2)
    return decoders, max(1, cores - decoders)


@dataclass(frozen=True)
class Source:
    """An image to score; ``folder_label``: its ImageFolder class (the first folder under a DIR argument)."""

    path: str
    folder_label: str | None = None


def _walk(root: str) -> list[Source]:
    """Images under ``root`` in ImageFolder's order (sorted, symlinks followed)."""
    found = []
    for here, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel = Path(os.path.relpath(here, root)).parts
        label = rel[0] if rel and rel[0] != "." else None
        found += [
            Source(os.path.join(here, f), label)
            for f in sorted(files)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def find_images(arguments: Sequence[str]) -> list[Source]:
    """Folders (recursively), globs (``**`` too; quote them) and files → images, each once, in order.

    Named files are kept whatever they are called (a missing or broken one becomes an error row); folders
    and glob matches contribute only files with an image extension.
    """
    sources: list[Source] = []
    for arg in arguments:
        if os.path.isdir(arg):
            found = _walk(arg)
        elif any(c in arg for c in GLOB_CHARS) and not os.path.exists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            found = [s for m in matches if os.path.isdir(m) for s in _walk(m)]
            found += [
                Source(m) for m in matches if os.path.isfile(m) and m.lower().endswith(IMAGE_EXTENSIONS)
            ]
        else:
            found = [Source(arg)]
        if not found:
            raise PredictError(f"{arg}: no images there (looked for {', '.join(IMAGE_EXTENSIONS)})")
        sources += found
    unique: dict[str, Source] = {}
    for source in sources:
        unique.setdefault(os.path.abspath(source.path), source)
    return list(unique.values())


class Scorer(Protocol):
    """``prepare`` runs in ``workers`` threads, one path at a time; ``infer`` in the calling thread, on up to
    ``chunk`` prepared items. Either raises for an image it cannot handle."""

    workers: int
    chunk: int

    def prepare(self, path: str) -> Any: ...

    def infer(self, items: list[Any]) -> list[dict]: ...

    def describe(self) -> str: ...


def read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise PredictError(f"cannot read ({e.strerror or e})") from e


class LocalScorer:
    """model.pt in this process: decode + preprocess in threads, batched network in the caller."""

    def __init__(self, runner: Runner, top_k: int, batch_size: int, workers: int) -> None:
        from serve import inference  # torch: only when scoring here (the endpoint client stays light)

        self.inference = inference
        self.runner, self.top_k, self.chunk, self.workers = runner, top_k, batch_size, workers

    def prepare(self, path: str) -> Any:
        try:
            image = self.inference.decode_image(read(path), "file", min_side=self.runner.resize_size)
        except self.inference.RequestError as e:
            raise PredictError(str(e)) from e
        return self.runner.preprocess(image)

    def infer(self, items: list[Any]) -> list[dict]:
        return self.inference.top_predictions(self.runner.forward(items), self.runner.class_names, self.top_k)

    def describe(self) -> str:
        import torch

        return (
            f"{self.runner.describe()}, batches of up to {self.chunk}, {self.workers} decode thread(s), "
            f"{torch.get_num_threads()} torch thread(s)"
        )


class RemoteScorer:
    """An endpoint: ``predict(image bytes) -> prediction`` called from ``concurrency`` threads."""

    def __init__(self, predict: Callable[[bytes], dict], concurrency: int, where: str) -> None:
        self.predict, self.workers, self.chunk, self.where = predict, concurrency, concurrency, where

    def prepare(self, path: str) -> dict:
        return self.predict(read(path))

    def infer(self, items: list[Any]) -> list[dict]:
        return items

    def describe(self) -> str:
        return f"{self.where}, {self.workers} request(s) in flight"


def _message(e: BaseException) -> str:
    """A PredictError's message as it is; anything else with its type, which says more than its text."""
    return str(e) if isinstance(e, PredictError) else f"{type(e).__name__}: {e}"


def _infer(scorer: Scorer, items: list[Any]) -> list[dict | str]:
    """``scorer.infer``; when a batch fails, each item alone, so one bad image costs only its own row."""
    try:
        results = scorer.infer(items)
        if len(results) != len(items):
            raise RuntimeError(f"{len(results)} answers for {len(items)} images")
        return list(results)
    except Exception as e:  # noqa: BLE001 — reported in the image's row
        if len(items) == 1:
            return [f"inference failed: {_message(e)}"]
        return [r for item in items for r in _infer(scorer, [item])]


def _rows(chunk: list[tuple[str, Future]], scorer: Scorer) -> list[dict]:
    prepared: list[tuple[str, Any, str | None]] = []
    for path, future in chunk:
        try:
            prepared.append((path, future.result(), None))
        except Exception as e:  # noqa: BLE001 — a bad file is a row, not the end of the run
            prepared.append((path, None, _message(e)))
    good = [item for _, item, err in prepared if err is None]
    answers = iter(_infer(scorer, good) if good else [])
    rows = []
    for path, _, err in prepared:
        result = err if err is not None else next(answers)
        rows.append(error_row(path, result) if isinstance(result, str) else prediction_row(path, result))
    return rows


class Progress:
    """``1,234/10,000 images (12%), 25.3 images/s, ETA 5m47s, 2 errors`` on ``stream``: redrawn in place on a
    terminal, a new line every ``every_s`` seconds otherwise (logs, CI). ``stream`` None = ``sys.stderr`` as
    it is when the run starts (not when this module was imported: it may have been replaced since)."""

    def __init__(self, total: int, stream: TextIO | None = None, every_s: float = 10.0) -> None:
        stream = stream or sys.stderr
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.started = self.last = time.perf_counter()

    def update(self, done: int, errors: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = f", ETA {_duration((self.total - done) / rate)}" if rate > 0 and done < self.total else ""
        line = (
            f"{done:,}/{self.total:,} images ({100 * done / max(self.total, 1):.0f}%), {rate:.1f} images/s"
            f"{eta}, {errors} error{'s' if errors != 1 else ''}"
        )
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        if final and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


@dataclass
class Summary:
    found: int
    skipped: int
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def pending(sources: Iterable[Source], out: PredictionsFile) -> list[str]:
    """The paths of the sources that have no row in ``out`` yet (matched by absolute path)."""
    done = {os.path.abspath(r["path"]) for r in out.rows}
    return [s.path for s in sources if os.path.abspath(s.path) not in done]


def score(
    sources: Sequence[Source], scorer: Scorer, out: PredictionsFile, progress: Progress | None = None
) -> Summary:
    """Score the sources not yet in ``out``, appending one chunk of rows at a time.

    Ctrl-C (KeyboardInterrupt) stops after the chunk being written; ``Summary.interrupted`` says so.
    """
    todo = pending(sources, out)
    summary = Summary(found=len(sources), skipped=len(sources) - len(todo))
    progress = progress or Progress(len(todo))
    pool = ThreadPoolExecutor(scorer.workers, thread_name_prefix="decode")
    queued: deque[tuple[str, Future]] = deque()
    paths = iter(todo)
    ahead = 2 * scorer.chunk + scorer.workers  # prepared images waiting, at most: bounds memory

    def fill() -> None:
        while len(queued) < ahead and (path := next(paths, None)) is not None:
            queued.append((path, pool.submit(scorer.prepare, path)))

    started = time.perf_counter()
    try:
        fill()
        while queued:
            chunk = [queued.popleft() for _ in range(min(scorer.chunk, len(queued)))]
            fill()  # the threads prepare the next chunk while this one runs
            rows = _rows(chunk, scorer)
            out.write(rows)
            summary.scored += len(rows)
            summary.errors += sum(r["error"] is not None for r in rows)
            progress.update(summary.scored, summary.errors)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        summary.seconds = time.perf_counter() - started
    progress.update(summary.scored, summary.errors, final=True)
    return summary


@dataclass
class Accuracy:
    images: int  # scored images under a folder named after a class
    correct: int
    top_k_correct: int
    other_folders: int  # images under folders that are not class names


def accuracy(sources: Iterable[Source], rows: Iterable[dict], class_names: Sequence[str]) -> Accuracy | None:
    """Top-1 and top-k accuracy against the folder labels, or None when no folder is a class name."""
    labels = {os.path.abspath(s.path): s.folder_label for s in sources if s.folder_label is not None}
    classes = set(class_names)
    if not classes.intersection(labels.values()):
        return None
    result = Accuracy(0, 0, 0, sum(label not in classes for label in labels.values()))
    for row in rows:
        truth = labels.get(os.path.abspath(row["path"]))
        if truth not in classes or row["error"] is not None:
            continue
        result.images += 1
        result.correct += row["label"] == truth
        result.top_k_correct += any(t["label"] == truth for t in row["top_k"])
    return result


def report(summary: Summary, out: PredictionsFile, found: Accuracy | None, top_k: int) -> str:
    """The closing lines: counts, then ``key=value`` lines (images_per_s, accuracy) for scripts to read."""
    lines = [
        f"{out.path}: {summary.scored:,} image(s) scored now in {summary.seconds:.1f}s "
        f"({summary.errors} error(s)), {summary.skipped:,} already there"
        + (" — interrupted: run the same command again to score the rest" if summary.interrupted else ""),
        f"images_per_s={summary.images_per_s:.1f}",
    ]
    if found is not None and found.images:
        lines.append(f"accuracy={found.correct / found.images:.4f}")
        lines.append(f"top_{top_k}_accuracy={found.top_k_correct / found.images:.4f}")
        lines.append(
            f"(against the folder labels of {found.images:,} image(s) in folders named after classes"
            + (f"; {found.other_folders:,} in other folders left out" if found.other_folders else "")
            + ")"
        )
    return "\n".join(lines)
