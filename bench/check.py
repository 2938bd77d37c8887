"""Benchmark ``python -m dogbreed.data check`` on a generated dataset the size of the dog dataset.

8,351 JPEGs in 133 classes (6,680 train / 835 valid / 836 test, unevenly spread like the real set), at
photo-like sizes (mostly 500x375 and 375x500, some up to 1600x1200) with photo-like entropy (smooth
colour fields plus sensor-like noise). The set is generated once and cached under bench/out/ (git-ignored).
Prints the full check's throughput with one worker and with every core, and the ratio, from one run.

    python bench/check.py [--root bench/out/check-8351] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from dogbreed.data.check import run_check

SPLITS = {"train": 6680, "valid": 835, "test": 836}
NUM_CLASSES = 133
# (width, height, weight): what a web-scraped photo collection looks like
SIZES = [
    (500, 375, 35),
    (375, 500, 15),
    (500, 333, 10),
    (640, 480, 15),
    (800, 600, 10),
    (1024, 768, 10),
    (1600, 1200, 5),
]
SPEC = {"splits": SPLITS, "classes": NUM_CLASSES, "sizes": SIZES, "seed": 0, "version": 1}


def _counts(total: int, rng: np.random.Generator) -> list[int]:
    """``total`` images over the classes, uneven (like the dog set's 26..77 per class in train)."""
    weights = rng.uniform(0.5, 1.5, NUM_CLASSES)
    counts = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(int)
    for i in rng.permutation(NUM_CLASSES)[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _write(job: tuple[str, int, int, int]) -> int:
    """Draw and save one image; returns its size in bytes."""
    path, width, height, seed = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 48), max(2, width // 48), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)  # sensor-like noise (std ~7)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return os.path.getsize(path)


def generate(root: Path) -> Path:
    """Build the dataset in a temp folder and rename it into place (reused while SPEC is unchanged)."""
    marker = root / "spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(SPEC)):
        return root
    rng = np.random.default_rng(SPEC["seed"])
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    sizes = np.array([(w, h) for w, h, _ in SIZES])
    p = np.array([wt for *_, wt in SIZES], dtype=float)
    jobs = []
    for split, total in SPLITS.items():
        for c, n in enumerate(_counts(total, rng)):
            folder = tmp / split / f"{c + 1:03d}.Breed_{c + 1:03d}"
            folder.mkdir(parents=True)
            for k in range(n):
                w, h = sizes[rng.choice(len(SIZES), p=p / p.sum())]
                jobs.append(
                    (str(folder / f"Breed_{c + 1:03d}_{k:05d}.jpg"), int(w), int(h), int(rng.integers(2**63)))
                )
    print(f"generating {len(jobs):,} images in {root} (once) ...", file=sys.stderr, flush=True)
    try:
        with ProcessPoolExecutor() as pool:
            list(pool.map(_write, jobs, chunksize=64))
        (tmp / "spec.json").write_text(json.dumps(SPEC))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def describe(root: Path) -> str:
    files = [p for p in root.rglob("*.jpg")]
    sizes = [p.stat().st_size for p in files]
    pixels = []
    for p in files[::50]:
        with Image.open(p) as img:
            pixels.append(img.width * img.height)
    return (
        f"{len(files):,} JPEGs, {NUM_CLASSES} classes, mean {np.mean(sizes) / 1024:.0f} KiB, "
        f"mean {np.mean(pixels) / 1e3:.0f}k pixels, {sum(sizes) / 2**20:.0f} MiB in all"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).parent / "out" / "check-8351")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="parallel run's workers (default: all cores)",
    )
    args = parser.parse_args()
    root = generate(args.root)
    print(f"dataset: {root} ({describe(root)})")
    for path in root.rglob("*.jpg"):  # warm the page cache so both runs read from memory
        path.read_bytes()
    rates = {}
    for workers in (1, args.workers):
        cpu = _cpu_seconds()
        report = run_check(root, workers=workers)
        cpu_ms = (_cpu_seconds() - cpu) / report.files * 1e3
        rates[workers] = report.images_per_s
        print(
            f"check, {workers} worker{'s' * (workers > 1)}: {report.files:,} images in {report.seconds:.1f} "
            f"s = {report.images_per_s:,.0f} images/s ({cpu_ms:.2f} CPU ms/image, so at most "
            f"{workers * 1e3 / cpu_ms:,.0f} images/s on {workers} idle core{'s' * (workers > 1)}); "
            f"{len(report.issues)} issues"
        )
    print(
        f"ratio {args.workers} workers / 1 worker: {rates[args.workers] / rates[1]:.2f}x (load average "
        f"{os.getloadavg()[0]:.1f})"
    )


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
