"""Procedurally drawn image classes: the demo and test dataset, generated offline in seconds.

Each class is a pattern family (circles, stripes, checkerboard, …) drawn with random colours, sizes and
positions, plus noise, so a pretrained CNN can tell them apart but a constant guess cannot.
Written as JPEGs in ``ROOT/{train,valid,test}/NNN.Name/``, like the dog dataset.

    python -m dogbreed.data.synthetic data/synthetic --num-classes 6
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Color = tuple[int, int, int]
SPEC_FILE = "synthetic.json"


def _color(rng: random.Random) -> Color:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _contrasting(rng: random.Random, other: Color) -> Color:
    while True:
        c = _color(rng)
        if sum(abs(a - b) for a, b in zip(c, other, strict=True)) > 200:
            return c


def _circles(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    for _ in range(rng.randint(2, 5)):
        r = rng.randint(s // 10, s // 5)
        x, y = rng.randint(r, s - r), rng.randint(r, s - r)
        d.ellipse((x - r, y - r, x + r, y + r), fill=fg)


def _squares(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    for _ in range(rng.randint(2, 5)):
        r = rng.randint(s // 10, s // 5)
        x, y = rng.randint(r, s - r), rng.randint(r, s - r)
        d.rectangle((x - r, y - r, x + r, y + r), fill=fg)


def _triangles(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    for _ in range(rng.randint(2, 5)):
        r = rng.randint(s // 8, s // 4)
        x, y = rng.randint(r, s - r), rng.randint(r, s - r)
        a = rng.random() * 2 * math.pi
        pts = [
            (x + r * math.cos(a + k * 2 * math.pi / 3), y + r * math.sin(a + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        d.polygon(pts, fill=fg)


def _stripes(vertical: bool) -> Callable[[ImageDraw.ImageDraw, int, Color, random.Random], None]:
    def draw(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
        width = rng.randint(s // 24, s // 10)
        offset = rng.randint(0, 2 * width)
        for p in range(-offset, s, 2 * width):
            d.rectangle((p, 0, p + width - 1, s) if vertical else (0, p, s, p + width - 1), fill=fg)

    return draw


def _checkerboard(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    cell = rng.randint(s // 12, s // 5)
    for i in range(0, s, cell):
        for j in range(0, s, cell):
            if (i // cell + j // cell) % 2 == 0:
                d.rectangle((i, j, i + cell - 1, j + cell - 1), fill=fg)


def _rings(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    x, y = rng.randint(s // 3, 2 * s // 3), rng.randint(s // 3, 2 * s // 3)
    step = rng.randint(s // 20, s // 10)
    for r in range(step, s, 2 * step):
        d.ellipse((x - r, y - r, x + r, y + r), outline=fg, width=max(1, step // 2))


def _dots(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
    for _ in range(rng.randint(30, 80)):
        r = rng.randint(1, max(2, s // 40))
        x, y = rng.randint(0, s), rng.randint(0, s)
        d.ellipse((x - r, y - r, x + r, y + r), fill=fg)


PATTERNS: list[tuple[str, Callable[[ImageDraw.ImageDraw, int, Color, random.Random], None]]] = [
    ("Circles", _circles),
    ("Horizontal_stripes", _stripes(vertical=False)),
    ("Checkerboard", _checkerboard),
    ("Triangles", _triangles),
    ("Vertical_stripes", _stripes(vertical=True)),
    ("Rings", _rings),
    ("Squares", _squares),
    ("Dots", _dots),
]


@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int = 6
    train_per_class: int = 60
    valid_per_class: int = 15
    test_per_class: int = 15
    image_size: int = 160
    seed: int = 0

    def class_names(self) -> list[str]:
        if not 2 <= self.num_classes <= len(PATTERNS):
            raise ValueError(
                f"data.synthetic.num_classes must be between 2 and {len(PATTERNS)}, got {self.num_classes}"
            )
        return [f"{i + 1:03d}.{PATTERNS[i][0]}" for i in range(self.num_classes)]


def draw_image(class_index: int, size: int, rng: random.Random) -> Image.Image:
    """One sample of class ``class_index``: random background, pattern, blur and noise."""
    bg = _color(rng)
    img = Image.new("RGB", (size, size), bg)
    PATTERNS[class_index][1](ImageDraw.Draw(img), size, _contrasting(rng, bg), rng)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.random() * 1.5))
    arr = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-20, 21, size=arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


def generate(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write the dataset into ``root`` atomically (temp folder, then rename); return ``root``."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    names = spec.class_names()
    rng = random.Random(spec.seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        counts = {"train": spec.train_per_class, "valid": spec.valid_per_class, "test": spec.test_per_class}
        for split, n in counts.items():
            for ci, name in enumerate(names):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for k in range(n):
                    draw_image(ci, spec.image_size, rng).save(
                        folder / f"{name.split('.', 1)[1]}_{k:05d}.jpg", quality=90
                    )
        (tmp / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2))
        tmp.chmod(0o755)  # mkdtemp creates it private
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _generated_with(root: Path, spec: SyntheticSpec) -> bool:
    marker = root / SPEC_FILE
    return marker.is_file() and json.loads(marker.read_text()) == asdict(spec)


def ensure(root: str | Path, spec: SyntheticSpec) -> Path:
    """Generate ``root`` unless it already holds a dataset generated with the same ``spec``.

    Runs started together (a sweep, two terminals) generate it once: the others wait on a lock file
    beside ``root``, then find it there, instead of replacing it while the first one reads it.
    """
    root = Path(root)
    if _generated_with(root, spec):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _generated_with(root, spec):
            return root
        if root.exists() and not (root / SPEC_FILE).is_file():
            raise FileExistsError(
                f"{root} exists and was not generated by dogbreed.data.synthetic; choose another data.root"
            )
        return generate(root, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", type=Path, help="folder to write (replaced if it was generated before)")
    defaults = SyntheticSpec()
    for key, value in asdict(defaults).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(**{k: getattr(args, k) for k in asdict(defaults)})
    print(generate(args.root, spec))


if __name__ == "__main__":
    main()
