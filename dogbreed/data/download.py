"""Fetch and unpack the dog dataset: resumable download, checksum, zip-slip-safe extraction, atomic rename.

``python -m dogbreed.data download`` leaves ``data/dogImages/{train,valid,test}/NNN.Breed_name/``. The
archive is written as ``<name>.zip.part`` and renamed only when complete and verified; extraction goes
to a temporary folder next to the target, which is renamed into place last, so an interrupted run never
leaves a half dataset behind. Running it again when the dataset is there does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from dogbreed.data.layout import DatasetError, count_images, find_splits

DEFAULT_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
CHUNK = 1 << 16  # read size: an interrupted transfer loses at most this much of what it had received
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_JUNK_NAMES = (".DS_Store", "Thumbs.db")


class DownloadError(RuntimeError):
    """Download or extraction failed; the message says what happened and what to do next."""


class UnsafeArchiveError(DownloadError):
    """The archive holds an entry that would be written outside the target folder (zip-slip)."""


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
    """A transient failure (connection cut short, server error): retry, resuming what we have."""


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
                _fetch_once(session, url, part, meta, checksum, progress, timeout)
                break
            except DownloadError:
                if not part.exists():  # removed after a checksum mismatch: nothing left to resume
                    meta.unlink(missing_ok=True)
                raise
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _Retryable,
            ) as exc:
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


def _fetch_once(session, url, part: Path, meta: Path, checksum, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    validator = json.loads(meta.read_text()).get("validator") if have and meta.exists() else None
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
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
        if r.status_code == 200 or not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            have = 0  # the server ignored the range (or the file changed): start over
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


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path; UnsafeArchiveError for absolute paths, ``..`` parts or symlinks."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UnsafeArchiveError(
            f"refusing to extract: archive entry {info.filename!r} points outside the target folder"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"refusing to extract: archive entry {info.filename!r} is a symbolic link")
    return path


def _is_junk(path: PurePosixPath) -> bool:
    """macOS resource forks and desktop files that zips made on a Mac or Windows carry along."""
    return path.parts[:1] == ("__MACOSX",) or path.name in _JUNK_NAMES or path.name.startswith("._")


def extract(archive: Path, target: Path, progress: bool = True) -> Path:
    """Unpack ``archive`` so that ``target`` holds train/valid/test; atomic (temp folder, then rename).

    The archive may hold the splits at its top level or inside one top-level folder (dogImages.zip does).
    Every entry is checked before anything is written.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a zip archive ({exc}); delete it and download again.") from exc
    with zf:
        members = [(info, _member_path(info)) for info in zf.infolist()]
        members = [(i, p) for i, p in members if not _is_junk(p)]
        need = sum(i.file_size for i, _ in members)
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if need > free:
            raise DownloadError(
                f"extracting {archive.name} needs {need / 2**30:.1f} GiB but {target.parent} has "
                f"{free / 2**30:.1f} GiB free"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            for info, rel in tqdm(
                members, desc=f"extract {archive.name}", unit="file", disable=not progress, leave=False
            ):
                out = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            _move_into_place(_dataset_folder(tmp, archive), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dataset_folder(tmp: Path, archive: Path) -> Path:
    """``tmp`` itself when the splits are at the archive's top level, else its single top folder."""
    top = [p for p in tmp.iterdir() if not p.name.startswith(".")]
    candidates = [tmp] + ([top[0]] if len(top) == 1 and top[0].is_dir() else [])
    for folder in reversed(candidates):
        try:
            find_splits(folder)
            return folder
        except DatasetError:
            continue
    found = ", ".join(sorted(p.name for p in top)) or "nothing"
    raise DownloadError(
        f"{archive} holds no train/, valid/ (or val/) and test/ folders (top level: {found}); is it the "
        "right archive?"
    )


def _move_into_place(src: Path, target: Path) -> None:
    """Rename ``src`` to ``target`` (replacing it), with the permissions a plain mkdir would give."""
    umask = os.umask(0)
    os.umask(umask)
    src.chmod(0o777 & ~umask)  # mkdtemp made it private
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
    src.rename(target)
    if old is not None:
        shutil.rmtree(old)


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
