"""Unpack a dataset zip safely: every entry checked first (zip-slip, symlinks), damaged entries reported in
one line, unpacked into a temporary folder renamed into place only when complete."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dogbreed.data.layout import DatasetError, find_splits

CHUNK = 1 << 16  # read size: an interrupted transfer loses at most this much of what it had received
_JUNK_NAMES = (".DS_Store", "Thumbs.db")


class DownloadError(RuntimeError):
    """Download or extraction failed; the message says what happened and what to do next."""


class UnsafeArchiveError(DownloadError):
    """The archive holds an entry that would be written outside the target folder (zip-slip)."""


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
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                        if dst.tell() != info.file_size:
                            raise zipfile.BadZipFile(
                                f"it declares {info.file_size:,} bytes, holds {dst.tell():,}"
                            )
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                    raise DownloadError(
                        f"{archive} is damaged: entry {info.filename!r} does not unpack ({exc}); nothing was "
                        "extracted. Delete it and download again."
                    ) from None
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
