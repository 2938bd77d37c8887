"""Full dataset check: decode every image in parallel and report problems by path.

Finds files that are empty, not images of a format training opens (:data:`dogbreed.data.images.FORMATS`), or
do not decode completely (truncated JPEGs included: Pillow's ``LOAD_TRUNCATED_IMAGES`` is forced off in the
workers, and every image is fully decoded, not just ``verify()``-ed), images below a minimum size, unusual
modes, exact duplicates (content hash) within and across splits, the structural problems of
:mod:`dogbreed.data.layout` and class imbalance. Errors are what would break training; warnings are worth a
look. ``quarantine`` moves broken files out (never deletes).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import statistics
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import ImageFile, UnidentifiedImageError
from tqdm import tqdm

from dogbreed.cores import usable_cores
from dogbreed.data.images import FORMAT_NAMES, open_image, to_rgb
from dogbreed.data.layout import Layout, class_folders, find_splits, is_image_file, structural_problems

ERROR, WARNING = "error", "warning"
#: Kinds of problems that make a file unusable; ``--quarantine`` moves exactly these.
BROKEN_KINDS = ("zero_byte", "not_image", "undecodable", "truncated")
UNUSUAL_MODES = {
    "CMYK": "CMYK",
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
    "RGBA": "alpha channel",
    "LA": "alpha channel",
    "PA": "palette with alpha channel",
}


@dataclass
class Issue:
    severity: str  # "error" (would break training) or "warning"
    kind: str
    path: str | None  # relative to the dataset root, posix; None for dataset-wide findings
    message: str
    moved_to: str | None = None


@dataclass(frozen=True)
class FileResult:
    """What one worker learned about one file (small, so it pickles cheaply)."""

    size: int
    sha256: str | None
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    transparency: bool = False
    kind: str | None = None  # a BROKEN_KINDS entry when the file is unusable
    error: str = ""


@dataclass
class CheckReport:
    root: str
    files: int = 0
    images: int = 0
    seconds: float = 0.0
    workers: int = 1
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> usable images
    issues: list[Issue] = field(default_factory=list)

    @property
    def blocking(self) -> list[Issue]:
        """Errors still in place (not quarantined): these would break training."""
        return [i for i in self.issues if i.severity == ERROR and i.moved_to is None]

    def blocking_lines(self) -> list[str]:
        return [f"{i.path}: {i.message}" if i.path else i.message for i in self.blocking]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def images_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def imbalance(self) -> dict[str, dict[str, Any]]:
        """Per split: images per class, min/median/max and the classes at the extremes."""
        stats = {}
        for split, per_class in self.counts.items():
            if not per_class:
                continue
            lo = min(per_class, key=lambda c: (per_class[c], c))
            hi = max(per_class, key=lambda c: (per_class[c], c))
            stats[split] = {
                "classes": len(per_class),
                "images": sum(per_class.values()),
                "min": per_class[lo],
                "min_class": lo,
                "median": statistics.median(per_class.values()),
                "max": per_class[hi],
                "max_class": hi,
            }
        return stats

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": not self.blocking,
            "errors": len(self.blocking),
            "warnings": len(self.warnings),
            "files": self.files,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
            "workers": self.workers,
            "splits": self.imbalance(),
            "issues": [asdict(i) for i in self.issues],
        }


def _init_worker() -> None:
    warnings.simplefilter("ignore")  # DecompressionBombWarning etc.: results carry what matters


def inspect_file(path: str) -> FileResult:
    """Read, hash and fully decode one file; never raises for a bad file.

    Truncated data always fails here: ``LOAD_TRUNCATED_IMAGES`` is off during the decode (and restored after).
    """
    tolerant, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        return _inspect(path)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def _inspect(path: str) -> FileResult:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return FileResult(0, None, kind="undecodable", error=f"cannot read: {exc}")
    if not data:
        return FileResult(0, None, kind="zero_byte", error="empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(io.BytesIO(data))
    except Exception as exc:  # UnidentifiedImageError (incl. formats we do not open), or a broken header
        detail = "" if isinstance(exc, UnidentifiedImageError) else f": {_short(exc)}"
        error = f"not an image in a format training opens ({FORMAT_NAMES}){detail}"
        return FileResult(len(data), digest, kind="not_image", error=error)
    with img:
        info = dict(
            size=len(data),
            sha256=digest,
            width=img.width,
            height=img.height,
            mode=img.mode,
            format=img.format or "",
        )
        try:
            img.load()
            if img.mode != "RGB":
                to_rgb(img)
        except Exception as exc:  # truncated streams, corrupt data, decompression bombs, odd modes
            text = _short(exc)
            return FileResult(**info, kind="truncated" if "truncated" in text else "undecodable", error=text)
        transparency = img.mode == "P" and "transparency" in img.info
    return FileResult(**info, transparency=transparency)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def _files(layout: Layout) -> list[tuple[str, str, Path]]:
    """(split, class, path) for every non-hidden file below each class folder, as ImageFolder walks them."""
    out = []
    for split, split_dir in layout.splits.items():
        for label in class_folders(split_dir):
            for dirpath, dirnames, filenames in os.walk(split_dir / label):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [(split, label, Path(dirpath) / n) for n in sorted(filenames) if not n.startswith(".")]
    return out


def _scan(paths: list[Path], workers: int, progress: bool) -> list[FileResult]:
    """Inspect every file, in ``workers`` processes (in this one for ``workers == 1``)."""
    items = [str(p) for p in paths]
    bar = {"total": len(items), "unit": "img", "desc": "check", "disable": not progress, "leave": False}
    if workers == 1:
        with warnings.catch_warnings():
            _init_worker()
            return list(tqdm(map(inspect_file, items), **bar))
    chunksize = max(1, min(32, len(items) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.map(inspect_file, items, chunksize=chunksize), **bar))


def _file_issues(rel: str, path: Path, r: FileResult, min_size: int) -> list[Issue]:
    loaded = is_image_file(path)  # ImageFolder only loads files with an image extension
    if r.kind == "not_image" and not loaded:
        return [Issue(WARNING, "not_image", rel, f"{r.error}; training skips it")]
    if r.kind is not None:
        return [Issue(ERROR if loaded else WARNING, r.kind, rel, r.error)]
    issues = []
    if not loaded:
        issues.append(
            Issue(
                WARNING,
                "extension",
                rel,
                f"{r.format} image with extension {path.suffix!r}: training skips it (rename it)",
            )
        )
    if min(r.width, r.height) < min_size:
        issues.append(
            Issue(WARNING, "too_small", rel, f"{r.width}x{r.height} px, below --min-size {min_size}")
        )
    mode = "palette with transparency" if r.transparency else UNUSUAL_MODES.get(r.mode)
    if mode:
        issues.append(
            Issue(WARNING, "unusual_mode", rel, f"mode {r.mode} ({mode}); converted to RGB when loaded")
        )
    return issues


def _duplicate_issues(groups: dict[str, list[tuple[str, str, str]]]) -> list[Issue]:
    """One issue per extra copy, naming the first copy; copies across splits leak test data into training."""
    issues = []
    for copies in groups.values():
        if len(copies) < 2:
            continue
        copies = sorted(copies, key=lambda c: (c[0] != "train", c[0], c[2]))
        first_split, first_label, first = copies[0]
        for split, label, rel in copies[1:]:
            where = "across splits" if split != first_split else "within " + split
            also = f"; labelled {first_label!r} there" if label != first_label else ""
            kind = "duplicate_across_splits" if split != first_split else "duplicate"
            issues.append(Issue(WARNING, kind, rel, f"same bytes as {first} ({where}{also})"))
    return issues


def run_check(
    root: str | Path,
    min_size: int = 32,
    max_imbalance: float = 10.0,
    workers: int | None = None,
    progress: bool = False,
    quarantine: str | Path | None = None,
) -> CheckReport:
    """Check the dataset at ``root``; with ``quarantine``, move broken files there (relative paths kept)."""
    start = time.perf_counter()
    layout = find_splits(root)
    files = _files(layout)
    workers = (
        max(1, workers or usable_cores()) if len(files) >= 64 else 1
    )  # a pool costs more than a few files
    results = _scan([p for _, _, p in files], workers, progress)
    report = CheckReport(root=str(layout.root), files=len(files), workers=workers)
    report.counts = {split: dict.fromkeys(class_folders(d), 0) for split, d in layout.splits.items()}
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for (split, label, path), r in zip(files, results, strict=True):
        rel = path.relative_to(layout.root).as_posix()
        report.issues += _file_issues(rel, path, r, min_size)
        if r.kind is None and is_image_file(path):
            report.images += 1
            report.counts[split][label] += 1
            groups[r.sha256].append((split, label, rel))
    report.issues += _duplicate_issues(groups)
    if quarantine is not None:
        _quarantine(report, layout, Path(quarantine))
    report.issues += [Issue(ERROR, "structure", None, p) for p in structural_problems(layout)]
    for split, stats in report.imbalance().items():
        if stats["min"] and stats["max"] / stats["min"] > max_imbalance:
            report.issues.append(
                Issue(
                    WARNING,
                    "imbalance",
                    layout.splits[split].relative_to(layout.root).as_posix(),
                    f"{stats['max']} images in {stats['max_class']} vs {stats['min']} in "
                    f"{stats['min_class']} (ratio {stats['max'] / stats['min']:.1f} > --max-imbalance "
                    f"{max_imbalance:g})",
                )
            )
    report.seconds = time.perf_counter() - start
    return report


def _quarantine(report: CheckReport, layout: Layout, dest: Path) -> None:
    """Move every broken file to ``dest/<path relative to root>``; never overwrite, never delete."""
    dest = dest.resolve()
    for split_dir in layout.splits.values():
        if dest.is_relative_to(split_dir.resolve()):
            raise ValueError(
                f"--quarantine {dest} is inside the split folder {split_dir}; choose a folder outside it"
            )
    for issue in report.issues:
        if issue.kind not in BROKEN_KINDS or issue.path is None:
            continue
        target = dest / issue.path
        n = 1
        while target.exists():
            target = target.with_name(f"{Path(issue.path).stem}.{n}{Path(issue.path).suffix}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(layout.root / issue.path, target)
        issue.moved_to = str(target)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def format_table(report: CheckReport) -> str:
    """The human-readable report: per-split class statistics, then every problem by path."""
    lines = [
        f"{report.root}: {report.files:,} files, {report.images:,} usable images; checked in "
        f"{report.seconds:.1f} s ({report.images_per_s:,.0f} files/s, {report.workers} "
        f"worker{'s' * (report.workers > 1)})",
        "",
    ]
    rows = [
        [
            split,
            str(s["classes"]),
            f"{s['images']:,}",
            f"{s['min']} ({s['min_class']})",
            f"{s['median']:g}",
            f"{s['max']} ({s['max_class']})",
        ]
        for split, s in report.imbalance().items()
    ]
    lines += _table(["SPLIT", "CLASSES", "IMAGES", "MIN/CLASS", "MEDIAN", "MAX/CLASS"], rows) + [""]
    order = {ERROR: 0, WARNING: 1}
    issues = sorted(report.issues, key=lambda i: (order[i.severity], i.kind, i.path or ""))
    if issues:
        rows = [
            [
                i.severity,
                i.kind,
                i.path or "-",
                i.message + (f" -> moved to {i.moved_to}" if i.moved_to else ""),
            ]
            for i in issues
        ]
        lines += _table(["SEVERITY", "KIND", "PATH", "DETAIL"], rows) + [""]
    blocking, warned = len(report.blocking), len(report.warnings)
    moved = sum(1 for i in report.issues if i.moved_to)
    if moved:
        lines.append(f"quarantined {moved} broken file{'s' * (moved != 1)} (moved, not deleted)")
    if blocking:
        lines.append(
            f"FAILED: {blocking} problem{'s' * (blocking != 1)} would break training; {warned} "
            f"warning{'s' * (warned != 1)}."
        )
        if not moved:
            lines.append(
                f"Move broken files out with: python -m dogbreed.data check {report.root} --quarantine DIR"
            )
    else:
        lines.append(f"OK: nothing would break training; {warned} warning{'s' * (warned != 1)}.")
    return "\n".join(lines)
