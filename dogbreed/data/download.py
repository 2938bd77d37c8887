"""Fetch and unpack the dog dataset: resumable download, checksum, zip-slip-safe extraction, atomic rename.

``python -m dogbreed.data download`` leaves ``data/dogImages/{train,valid,test}/NNN.Breed_name/``. The
archive is written as ``<name>.zip.part`` and renamed only when complete and verified; extraction
(``dogbreed.data.archive``) goes to a temporary folder next to the target, which is renamed into place
last, so an interrupted run never leaves a half dataset behind. Running it again when the dataset is
there does nothing. What a server or a file gets wrong (an unreadable resume marker, a Content-Range for
other bytes, a redirect to another scheme, a damaged zip) ends in one line saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import requests
from tqdm import tqdm

from dogbreed.data.archive import CHUNK, DownloadError, UnsafeArchiveError, extract
from dogbreed.data.layout import DatasetError, count_images, find_splits

__all__ = ["CHUNK", "DownloadError", "UnsafeArchiveError", "download", "extract", "fetch"]

DEFAULT_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # any hashlib name: sha256, md5, …
    hexdigest: str
    source: str  # where it came from, for error messages

    @classmethod
    def parse(cls, text: str, source: str = "--checksum") -> Checksum:
        """``ALGO:HEX`` (``sha256:ab12…``); a bare 64-hex value is taken as sha256."""
        algo, _, digest = text.rpartition(":")
        algo = (algo or ("sha256" if len(digest) == 64 else "")).lower()
        if algo not in hashlib.algorithms_available or not re.fullmatch(r"[0-9a-fA-F]+", digest):
            raise ValueError(f"{source}={text!r} is not ALGO:HEX (e.g. sha256:9f86d0…, md5:…)")
        return cls(algo, digest.lower(), source)

    def new(self):
        return hashlib.new(self.algorithm)


@dataclass(frozen=True)
class Result:
    path: Path
    skipped: bool
    message: str


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def archive_name(url: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    if not name.lower().endswith(".zip"):
        raise ValueError(f"--url must point to a .zip archive, got {url!r}")
    return name


def _hash_file(path: Path, checksum: Checksum):
    h = checksum.new()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h


def _verify(path: Path, checksum: Checksum, digest: str) -> None:
    if digest != checksum.hexdigest:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {path.name}: expected {checksum.algorithm} {checksum.hexdigest} "
            f"({checksum.source}), got {digest}. The corrupt file was removed; run the command again, "
            "or check the URL/--checksum."
        )


def _etag_checksum(headers) -> Checksum | None:
    """S3 gives a single-part object's MD5 as its ETag; use it when no checksum was given."""
    match = _MD5_ETAG.match(headers.get("ETag", ""))
    return Checksum("md5", match.group(1).lower(), "the server's ETag") if match else None


class _Retryable(Exception):
    """A transient failure (connection cut short, server error): retry, resuming what we have
    (``restart``: throw the partial file away first)."""

    def __init__(self, message: str, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


def fetch(
    url: str,
    archive: Path,
    checksum: Checksum | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    progress: bool = True,
    timeout: float = 60.0,
    echo: Callable[[str], None] = _stderr,
) -> Path:
    """Download ``url`` to ``archive``, resuming ``archive.part`` with HTTP Range after an interruption."""
    part = archive.with_name(archive.name + ".part")
    meta = archive.with_name(archive.name + ".part.json")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        for attempt in range(retries + 1):
            try:
                _fetch_once(session, url, part, meta, checksum, progress, timeout, echo)
                break
            except DownloadError:
                if not part.exists():  # removed after a checksum mismatch: nothing left to resume
                    meta.unlink(missing_ok=True)
                raise
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
                raise DownloadError(f"cannot download {url}: {_reason(exc)}; check --url.") from exc
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _Retryable,
            ) as exc:
                if isinstance(exc, _Retryable) and exc.restart:
                    part.unlink(missing_ok=True)
                    meta.unlink(missing_ok=True)
                have = part.stat().st_size if part.exists() else 0
                if attempt == retries:
                    raise DownloadError(
                        f"download of {url} interrupted after {have:,} bytes ({_reason(exc)}). The partial "
                        f"file {part} is kept: run the same command again to resume."
                    ) from exc
                echo(
                    f"transfer interrupted at {have:,} bytes ({_reason(exc)}); resuming in "
                    f"{retry_wait * 2**attempt:g} s"
                )
                time.sleep(retry_wait * 2**attempt)
    meta.unlink(missing_ok=True)
    os.replace(part, archive)
    return archive


def _reason(exc: BaseException) -> str:
    """The innermost message of requests' wrapped urllib3 errors."""
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _resume_validator(part: Path, meta: Path, echo: Callable[[str], None]) -> tuple[int, str | None]:
    """(bytes to resume from, the ETag/Last-Modified they came with; None: resume without If-Range, as
    when the marker is missing). A damaged marker says so in one line instead of a traceback."""
    have = part.stat().st_size if part.exists() else 0
    if not have or not meta.exists():
        return have, None
    try:
        marker = json.loads(meta.read_text())
        if not isinstance(marker, dict) or not isinstance(marker.get("validator"), str | None):
            raise ValueError('not {"url": …, "validator": …}')
    except (OSError, ValueError) as exc:
        echo(f"the resume marker {meta.name} is unreadable ({exc}); resuming without a validator")
        return have, None
    return have, marker.get("validator")


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _range_start(r, have: int) -> int:
    """Where a 206 body starts: ``have`` when its Content-Range says so and adds up, else _Retryable
    (the partial file is useless against a server that answers another range)."""
    match = _CONTENT_RANGE.match(r.headers.get("Content-Range", "").strip())
    length = r.headers.get("Content-Length")
    if match:
        start, end, total = int(match.group(1)), int(match.group(2)), match.group(3)
        consistent = end >= start and (total == "*" or end < int(total))
        if consistent and length is not None and int(length) != end - start + 1:
            consistent = False
        if consistent and start == have:
            return have
    raise _Retryable(
        f"the server answered the resume request for bytes {have}- with Content-Range "
        f"{r.headers.get('Content-Range')!r}; starting over",
        restart=True,
    )


def _get(session, url: str, headers: dict[str, str], timeout: float):
    """GET following redirects, but only to the same scheme (or http → https): a redirect to ftp:// or
    file://, or a downgrade to plain http, is refused with one line instead of followed or crashed on."""
    scheme = urlparse(url).scheme
    for _ in range(10):
        r = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
        if not r.is_redirect:
            return r
        target = urljoin(url, r.headers["Location"])
        r.close()
        new_scheme = urlparse(target).scheme
        if new_scheme != scheme and (scheme, new_scheme) != ("http", "https"):
            raise DownloadError(
                f"GET {url} redirected to {target} ({new_scheme or 'no'} scheme instead of {scheme}); "
                "refusing to follow. Download it another way and pass --archive FILE.zip."
            )
        url, scheme = target, new_scheme
    raise DownloadError(f"GET {url}: more than 10 redirects; check --url.")


def _fetch_once(
    session, url, part: Path, meta: Path, checksum, progress: bool, timeout: float, echo=_stderr
) -> None:
    have, validator = _resume_validator(part, meta, echo)
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    with _get(session, url, headers, timeout) as r:
        if r.status_code == 416 and have:  # nothing left to send: the partial file may already be whole
            total = int(r.headers.get("Content-Range", "*/-1").rpartition("/")[2] or -1)
            if total == have:
                return _finish(part, checksum or _etag_checksum(r.headers))
            part.unlink()
            raise _Retryable("the server rejected the resume range; starting over")
        if r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in (200, 206):
            raise DownloadError(f"GET {url} answered HTTP {r.status_code} {r.reason}; check --url.")
        if r.status_code == 200:
            have = 0  # the server ignored the range (or the file changed): start over
        elif have:
            have = _range_start(r, have)
        checksum = checksum or _etag_checksum(r.headers)
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        meta.write_text(json.dumps({"url": url, "validator": validator}))
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for block in r.iter_content(CHUNK):
                f.write(block)
                bar.update(len(block))
        got = part.stat().st_size
        if total is not None and got < total:
            raise _Retryable(f"got {got:,} of {total:,} bytes")
    _finish(part, checksum)


def _finish(part: Path, checksum: Checksum | None) -> None:
    if checksum is not None:
        _verify(part, checksum, _hash_file(part, checksum).hexdigest())


def _describe(root: Path) -> str:
    layout = find_splits(root)
    counts = {
        split: sum(count_images(c) for c in path.iterdir() if c.is_dir())
        for split, path in layout.splits.items()
    }
    return ", ".join(f"{split} {n:,}" for split, n in counts.items()) + " images"


def download(
    url: str = DEFAULT_URL,
    dest: str | Path = "data",
    checksum: str | Checksum | None = None,
    force: bool = False,
    keep_archive: bool = False,
    archive: str | Path | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
) -> Result:
    """Make ``dest/<archive stem>`` hold the dataset from ``url`` (or from a local ``archive``)."""
    if isinstance(checksum, str):
        checksum = Checksum.parse(checksum)
    name = Path(archive).name if archive else archive_name(url)
    dest = Path(dest)
    target = dest / Path(name).stem
    if target.exists() and not force:
        try:
            summary = _describe(target)
        except DatasetError as exc:
            raise DownloadError(
                f"{target} exists but is not a complete dataset ({exc}). Move it away or pass --force."
            ) from exc
        return Result(
            target, True, f"{target} is already there ({summary}); nothing to do (--force downloads again)."
        )
    if archive:
        zip_path = Path(archive)
        if not zip_path.is_file():
            raise DownloadError(f"--archive {zip_path} does not exist")
        if checksum is not None:
            _verify_keep(zip_path, checksum)
    else:
        zip_path = dest / name
        if force:
            zip_path.unlink(missing_ok=True)
        if zip_path.exists():
            echo(f"using the complete archive {zip_path} downloaded earlier")
            if checksum is not None:
                _verify(zip_path, checksum, _hash_file(zip_path, checksum).hexdigest())
        else:
            echo(f"downloading {url} -> {zip_path}")
            fetch(
                url, zip_path, checksum, retries=retries, retry_wait=retry_wait, progress=progress, echo=echo
            )
    echo(f"extracting {zip_path} -> {target}")
    try:
        extract(zip_path, target, progress=progress)
    except DownloadError as exc:
        if not archive:
            exc.args = (
                f"{exc} The downloaded archive is kept at {zip_path}: delete it, or pass --force to fetch it "
                "again.",
            )
        raise
    if not archive and not keep_archive:
        zip_path.unlink()
    return Result(
        target,
        False,
        f"{target} is ready ({_describe(target)}). Next: python -m dogbreed.data check {target}",
    )


def _verify_keep(path: Path, checksum: Checksum) -> None:
    """Like ``_verify`` but never deletes a file the user handed us."""
    digest = _hash_file(path, checksum).hexdigest()
    if digest != checksum.hexdigest:
        raise DownloadError(
            f"checksum mismatch for {path}: expected {checksum.algorithm} {checksum.hexdigest}, got {digest}"
        )
