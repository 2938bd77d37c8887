"""A transform job's answers → one predictions file, with the columns of ``python -m serve.predict --out``.

SageMaker writes the answer to each input object ``<input prefix><key>`` as ``<output path>/<key>.out``: the
body ``code/inference.py`` returned for that one image (``{"predictions": [...]}``, or ``{"error": ...}``
for an image the handler refused). Each becomes a row through ``serve.rows.row_from_answer`` and is appended
with ``serve.rows.PredictionsFile``, the local command's writer (a rerun into the same file skips the rows
already there). An input with no ``.out`` file got an error status from the container, or was never reached
before the job stopped: its row says so. Answers are fetched several at a time (one GET each) and written
in input order, a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from serve.rows import PredictionsFile, error_row, row_from_answer

CHUNK = 256  # answers fetched (in parallel) and written per step
FETCHERS = 16  # concurrent GETs: each answer is one small object


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass(frozen=True)
class Inputs:
    """The images of a transform job: the S3 prefix it reads (``uri``, ending in ``/``), and the path each row
    names. ``paths`` maps a key relative to ``uri`` to the local file it was uploaded from (rows then name the
    files, as the local command does); None = every object under ``uri``, rows naming its S3 URI.
    ``unsent``: (path, why) for images that were never sent."""

    uri: str
    paths: dict[str, str] | None = None
    unsent: list[tuple[str, str]] = field(default_factory=list)

    def keys(self, s3: Any) -> Iterator[tuple[str, str]]:
        """(relative key, row path) of every image, in input order."""
        if self.paths is not None:
            yield from self.paths.items()
            return
        bucket, prefix = split_uri(self.uri)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # folder markers are not images
                    yield obj["Key"][len(prefix) :], f"s3://{bucket}/{obj['Key']}"


@dataclass
class Merged:
    """What the predictions file holds for this job: ``images`` rows, ``errors`` of them error rows."""

    path: Path
    images: int = 0
    errors: int = 0
    skipped: int = 0  # rows already in the file (an earlier merge into it)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def merge(s3: Any, inputs: Inputs, output_path: str, out: Path, stopped: str | None = None) -> Merged:
    """Append one row per image of ``inputs`` to the predictions file ``out`` (csv or jsonl) from the
    ``.out`` answers under ``output_path``; ``stopped``: why the job ended other than Completed (said in the
    rows of images without an answer)."""
    out_bucket, out_prefix = split_uri(output_path.rstrip("/"))

    def answer(rel: str) -> bytes | None:
        try:
            return s3.get_object(Bucket=out_bucket, Key=f"{out_prefix}/{rel}.out")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    def missing(rel: str) -> str:
        ended = f" (the job ended {stopped})" if stopped else ""
        return (
            f"no answer in the transform job's output (s3://{out_bucket}/{out_prefix}/{rel}.out){ended}: "
            "the container answered this image with an error status, or the job never reached it; "
            "the job's CloudWatch logs say which"
        )

    with PredictionsFile.open(out) as file, ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3") as pool:
        done = {row["path"] for row in file.rows}
        merged = Merged(path=file.path, skipped=len(done))
        file.write(error_row(path, why) for path, why in inputs.unsent if path not in done)
        todo = ((rel, path) for rel, path in inputs.keys(s3) if path not in done)
        for chunk in _chunks(todo, CHUNK):
            bodies = pool.map(answer, [rel for rel, _ in chunk])
            file.write(
                row_from_answer(path, body) if body is not None else error_row(path, missing(rel))
                for (rel, path), body in zip(chunk, bodies, strict=True)
            )
        merged.images = len(file.rows)
        merged.errors = sum(row["error"] is not None for row in file.rows)
    return merged
