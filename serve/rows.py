"""The predictions file: one row per image, the same columns whoever scored it.

Columns (the contract; README "Scoring a folder"): ``path``, ``label``, ``probability``, ``top_k``, ``error``.
A scored image has ``label``/``probability`` (the best class) and ``top_k`` (a list of
``{"label", "probability"}``, best first) and an empty ``error``; an image that could not be scored has
only ``path`` and ``error``. ``.csv`` files have a header line, ``top_k`` as JSON text and empty cells for
missing values; ``.jsonl`` files hold one JSON object per line with ``null`` for missing values.

The file is appended to one batch at a time, so an interrupted run leaves every finished row in it; at
most the last row can be torn (a kill in the middle of a write). :meth:`PredictionsFile.open` drops such a
tail before appending, and reports the paths already there, so a rerun scores only the rest. It also takes
an advisory lock: a second run on the same file stops instead of scoring the same images again.

``row_from_answer`` turns one endpoint answer (``serve/inference.py``'s ``{"predictions": [...]}`` or
``{"error": ...}``) into a row: the same columns from a SageMaker Batch Transform ``.out`` file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two runs on one file there would both append
    fcntl = None  # type: ignore[assignment]

COLUMNS = ("path", "label", "probability", "top_k", "error")
FORMATS = (".csv", ".jsonl")
# Paths are bytes on POSIX: names that are not UTF-8 round-trip through the file unchanged.
ENCODING, ERRORS = "utf-8", "surrogateescape"


class RowsError(ValueError):
    """The predictions file cannot be used; the message names it and says what to do."""


def file_format(path: str | os.PathLike) -> str:
    """``.csv`` or ``.jsonl``, from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise RowsError(f"--out {path}: name it *.csv or *.jsonl (the suffix picks the format)")
    return suffix


def prediction_row(path: str, prediction: dict) -> dict[str, Any]:
    """A row for an image the model classified (``prediction``: one entry of the endpoint's answer)."""
    return {
        "path": path,
        "label": prediction["label"],
        "probability": prediction["probability"],
        "top_k": prediction["top_k"],
        "error": None,
    }


def error_row(path: str, error: str) -> dict[str, Any]:
    """A row for an image that could not be scored; ``error`` is kept on one line."""
    return {"path": path, "label": None, "probability": None, "top_k": None, "error": " ".join(error.split())}


def row_from_answer(path: str, body: bytes | str) -> dict[str, Any]:
    """A row from one endpoint answer for ``path`` (one image per request)."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return error_row(path, answer["error"])
    try:
        (prediction,) = answer["predictions"]
        return prediction_row(path, prediction)
    except (TypeError, KeyError, ValueError):
        text = body if isinstance(body, str) else body[:300].decode("utf-8", "replace")
        return error_row(path, f"unexpected answer {text[:300]!r}: expected one entry in 'predictions'")


def _csv_line(row: dict[str, Any]) -> str:
    out = io.StringIO()
    top_k = row["top_k"]
    cells = {**row, "top_k": json.dumps(top_k) if top_k is not None else None}
    csv.writer(out, lineterminator="\n").writerow(["" if cells[c] is None else cells[c] for c in COLUMNS])
    return out.getvalue()


def _csv_row(cells: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {c: (v if v != "" else None) for c, v in zip(COLUMNS, cells, strict=True)}
    if row["probability"] is not None:
        row["probability"] = float(row["probability"])
    if row["top_k"] is not None:
        row["top_k"] = json.loads(row["top_k"])
    return row


def _lines(text: str) -> Iterator[str]:
    """Lines ending in ``\n`` (the last one may not): str.splitlines would also split at \f, \u2028 …"""
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        yield text[start:end]
        start = end


def _complete_csv(text: str, name: str) -> tuple[int, list[dict[str, Any]]]:
    """(characters of complete records, the rows in them) — a record cut by EOF is not complete."""
    consumed, exhausted = 0, False

    def lines() -> Iterator[str]:
        nonlocal consumed, exhausted
        for line in _lines(text):
            consumed += len(line)
            yield line
        exhausted = True

    rows: list[dict[str, Any]] = []
    complete = 0
    for number, cells in enumerate(csv.reader(lines()), 1):
        if exhausted or text[consumed - 1 : consumed] != "\n":  # the kill came before its line ended
            break
        if number == 1:
            if tuple(cells) != COLUMNS:
                raise RowsError(
                    f"{name} does not start with the header {','.join(COLUMNS)}: it is not a predictions "
                    "file; pass another --out"
                )
        else:
            try:
                rows.append(_csv_row(cells))
            except (ValueError, TypeError) as e:
                raise RowsError(
                    f"{name} line {number} is not a predictions row ({e}); pass another --out"
                ) from e
        complete = consumed
    return complete, rows


def _complete_jsonl(text: str, name: str) -> tuple[int, list[dict[str, Any]]]:
    complete, rows = 0, []
    for number, line in enumerate(_lines(text), 1):
        if not line.endswith("\n"):  # the torn tail
            break
        try:
            row = json.loads(line)
            rows.append({c: row[c] for c in COLUMNS})
        except (ValueError, KeyError, TypeError) as e:
            raise RowsError(f"{name} line {number} is not a predictions row ({e}); pass another --out") from e
        complete += len(line)
    return complete, rows


class PredictionsFile:
    """An append-only ``.csv`` or ``.jsonl`` predictions file; ``rows`` holds every row in it."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], handle: io.TextIOWrapper) -> None:
        self.path = path
        self.rows = rows
        self._handle = handle
        self.format = file_format(path)
        self._line = _csv_line if self.format == ".csv" else lambda row: json.dumps(row) + "\n"

    @classmethod
    def open(cls, path: str | os.PathLike) -> PredictionsFile:
        """Open for appending: read the complete rows already there, cut a torn last row off."""
        path = Path(path)
        csv_file = file_format(path) == ".csv"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+", encoding=ENCODING, errors=ERRORS, newline="")  # noqa: SIM115 — kept open
        except OSError as e:
            raise RowsError(f"--out {path}: cannot open it ({e.strerror or e})") from e
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as e:
                    raise RowsError(
                        f"--out {path}: another run is writing it; wait for it or pass another --out"
                    ) from e
            handle.seek(0)
            text = handle.read()
            complete, rows = (_complete_csv if csv_file else _complete_jsonl)(text, str(path))
            if complete < len(text):
                handle.truncate(len(text[:complete].encode(ENCODING, ERRORS)))
            handle.seek(0, os.SEEK_END)
            if csv_file and complete == 0:
                handle.write(",".join(COLUMNS) + "\n")
                handle.flush()
        except BaseException:
            handle.close()
            raise
        return cls(path, rows, handle)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append ``rows`` in one write and hand them to the OS (a kill after this loses none of them)."""
        rows = list(rows)
        text = "".join(self._line(row) for row in rows)
        if text:
            self._handle.write(text)
            self._handle.flush()
        self.rows += rows

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PredictionsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
