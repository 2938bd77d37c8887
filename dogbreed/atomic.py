"""Atomic file writes: a temp file in the target folder, then ``os.replace``.

Readers (and a run killed mid-write) never see half a report, model or metrics file. :func:`replacing`
serves writers that want a file name (``torch.save``, ``Figure.savefig``, ``export_chrome_trace``); the
``write_*`` helpers take the content.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files get the permissions a plain open() would give them (mkstemp alone would leave them 0600).
DEFAULT_MODE = 0o666 & ~_umask()


@contextmanager
def replacing(path: str | Path, mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """A temp file beside ``path`` to write to; it becomes ``path`` when the block ends without an error
    and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes, mode: int = DEFAULT_MODE) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")
