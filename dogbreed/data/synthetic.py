"""Procedurally drawn image classes: the demo and test dataset, generated offline in seconds.

The classes come in look-alike pairs, like dog breeds: circles and ellipses, pentagons and hexagons,
straight and wavy stripes, checkerboards and grids. Every image also gets what makes photos hard: a
random background, low-contrast colours, clutter shared by all classes, occluding patches, blur and
noise. A pretrained CNN tells the pairs apart from each other at once, and the two members of a pair
only with training, so accuracy climbs over the epochs and the evaluation's most-confused pairs are
the look-alikes. Written as JPEGs in ``ROOT/{train,valid,test}/NNN.Name/``, like the dog dataset.

    python -m dogbreed.data.synthetic data/synthetic --num-classes 8
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
Pattern = Callable[[ImageDraw.ImageDraw, int, Color, random.Random], None]
SPEC_FILE = "synthetic.json"
# Bumped whenever draw_image changes, so `ensure` regenerates data drawn by an older generator.
GENERATOR = 2


def _color(rng: random.Random) -> Color:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _contrasting(rng: random.Random, other: Color, min_distance: int) -> Color:
    """A colour at least ``min_distance`` (sum of channel differences) away from ``other``."""
    while True:
        c = _color(rng)
        if sum(abs(a - b) for a, b in zip(c, other, strict=True)) > min_distance:
            return c


def _polygons(sides: int) -> Pattern:
    def draw(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(s // 9, s // 5)
            x, y = rng.randint(r, s - r), rng.randint(r, s - r)
            d.regular_polygon((x, y, r), sides, rotation=rng.random() * 360, fill=fg)

    return draw


def _ellipses(aspect: tuple[float, float]) -> Pattern:
    """Discs (aspect 1) or ellipses stretched by ``aspect`` along a random axis."""

    def draw(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(s // 10, s // 6)
            a = rng.uniform(*aspect)
            rx, ry = (r * a, r / a) if rng.random() < 0.5 else (r / a, r * a)
            x, y = rng.uniform(rx, s - rx), rng.uniform(ry, s - ry)
            d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fg)

    return draw


def _stripes(amplitude: tuple[float, float]) -> Pattern:
    """Horizontal stripes; with ``amplitude`` > 0 (fraction of the stripe period) they wave."""

    def draw(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
        period = rng.randint(s // 8, s // 4)
        width = max(2, int(period * rng.uniform(0.3, 0.5)))
        amp = period * rng.uniform(*amplitude)
        wavelength = s * rng.uniform(0.3, 0.6)
        phase = rng.random() * 2 * math.pi
        for y0 in range(-period, s + period, period):
            points = [
                (x, y0 + amp * math.sin(2 * math.pi * x / wavelength + phase)) for x in range(0, s + 8, 8)
            ]
            d.line(points, fill=fg, width=width)

    return draw


def _checks(filled: bool) -> Pattern:
    """A checkerboard (``filled``) or a grid of lines with the same cell size."""

    def draw(d: ImageDraw.ImageDraw, s: int, fg: Color, rng: random.Random) -> None:
        cell = rng.randint(s // 10, s // 5)
        ox, oy = rng.randrange(cell), rng.randrange(cell)
        for i in range(-cell, s + cell, cell):
            for j in range(-cell, s + cell, cell):
                x, y = i + ox, j + oy
                if filled and (i // cell + j // cell) % 2 == 0:
                    d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fg)
                elif not filled:
                    d.rectangle((x, y, x + cell - 1, y + cell - 1), outline=fg, width=max(2, cell // 5))

    return draw


# Look-alike pairs side by side, so any even num_classes gives whole pairs.
PATTERNS: list[tuple[str, Pattern]] = [
    ("Circles", _ellipses((1.0, 1.0))),
    ("Ellipses", _ellipses((1.25, 1.5))),
    ("Pentagons", _polygons(5)),
    ("Hexagons", _polygons(6)),
    ("Straight_stripes", _stripes((0.0, 0.0))),
    ("Wavy_stripes", _stripes((0.04, 0.1))),
    ("Checkerboard", _checks(filled=True)),
    ("Grid", _checks(filled=False)),
]


def _background(size: int, rng: random.Random) -> Image.Image:
    """A plain colour or a linear gradient between two colours."""
    a = np.array(_color(rng), dtype=np.float32)
    if rng.random() < 0.5:
        return Image.new("RGB", (size, size), tuple(int(v) for v in a))
    b = np.array(_color(rng), dtype=np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    img = a + (b - a) * t * np.ones((1, size, 1), dtype=np.float32)
    if rng.random() < 0.5:
        img = img.transpose(1, 0, 2)
    return Image.fromarray(img.astype(np.uint8))


def _clutter(d: ImageDraw.ImageDraw, s: int, rng: random.Random) -> None:
    """Strokes and blobs that belong to no class (every class gets the same kind)."""
    for _ in range(rng.randint(2, 6)):
        x, y = rng.randrange(s), rng.randrange(s)
        if rng.random() < 0.5:
            d.line(
                (x, y, x + rng.randint(-s // 3, s // 3), y + rng.randint(-s // 3, s // 3)),
                fill=_color(rng),
                width=rng.randint(1, max(2, s // 40)),
            )
        else:
            r = rng.randint(2, max(3, s // 16))
            d.rectangle((x - r, y - r, x + r, y + r), fill=_color(rng))


def _occlude(d: ImageDraw.ImageDraw, s: int, rng: random.Random) -> None:
    """One or two opaque patches hiding part of the pattern."""
    for _ in range(rng.randint(1, 2)):
        w, h = rng.randint(s // 6, s // 3), rng.randint(s // 6, s // 3)
        x, y = rng.randrange(s - w), rng.randrange(s - h)
        d.rectangle((x, y, x + w, y + h), fill=_color(rng))


@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int = 8
    train_per_class: int = 60
    valid_per_class: int = 20
    test_per_class: int = 20
    image_size: int = 160
    seed: int = 0
    # true: look-alike pairs side by side (num_classes=4 is two pairs); false: one of each pair first
    # (num_classes=4 is four different families: a quick learner for tests).
    lookalikes: bool = True

    def patterns(self) -> list[int]:
        """Indices into PATTERNS, in class order."""
        if not 2 <= self.num_classes <= len(PATTERNS):
            raise ValueError(
                f"data.synthetic.num_classes must be between 2 and {len(PATTERNS)}, got {self.num_classes}"
            )
        order = (
            range(len(PATTERNS))
            if self.lookalikes
            else [*range(0, len(PATTERNS), 2), *range(1, len(PATTERNS), 2)]
        )
        return list(order)[: self.num_classes]

    def class_names(self) -> list[str]:
        return [f"{k + 1:03d}.{PATTERNS[i][0]}" for k, i in enumerate(self.patterns())]


def draw_image(class_index: int, size: int, rng: random.Random) -> Image.Image:
    """One sample of class ``class_index``: background, pattern, clutter, occlusion, blur and noise."""
    img = _background(size, rng)
    d = ImageDraw.Draw(img)
    bg = img.getpixel((size // 2, size // 2))
    PATTERNS[class_index][1](d, size, _contrasting(rng, bg, rng.choice((90, 150, 250))), rng)
    _clutter(d, size, rng)
    if rng.random() < 0.5:
        _occlude(d, size, rng)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0)))
    arr = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-30, 31, size=arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


def _marker(spec: SyntheticSpec) -> dict:
    return {**asdict(spec), "generator": GENERATOR}


def generate(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write the dataset into ``root`` atomically (temp folder, then rename); return ``root``."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    names, patterns = spec.class_names(), spec.patterns()
    rng = random.Random(spec.seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        counts = {"train": spec.train_per_class, "valid": spec.valid_per_class, "test": spec.test_per_class}
        for split, n in counts.items():
            for pattern, name in zip(patterns, names, strict=True):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for k in range(n):
                    draw_image(pattern, spec.image_size, rng).save(
                        folder / f"{name.split('.', 1)[1]}_{k:05d}.jpg", quality=90
                    )
        (tmp / SPEC_FILE).write_text(json.dumps(_marker(spec), indent=2))
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
    return marker.is_file() and json.loads(marker.read_text()) == _marker(spec)


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
        if isinstance(value, bool):
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(**{k: getattr(args, k) for k in asdict(defaults)})
    print(generate(args.root, spec))


if __name__ == "__main__":
    main()
