"""Decode any image file into an RGB PIL image, reducing JPEGs on decode when much larger than needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, 16-bit, palette (with transparency), RGBA/LA and CMYK images to RGB.

    Transparent areas are composited on white, as a viewer shows them.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open ``path`` as RGB; with ``min_side``, let libjpeg decode at a reduced scale (``Image.draft``)
    as long as the shorter side stays at least ``min_side`` — several times faster for large photos."""
    with Image.open(path) as img:
        if min_side and img.format == "JPEG":
            w, h = img.size
            scale = min(w, h) / float(min_side)
            if scale >= 2:
                img.draft("RGB", (max(1, int(w / scale * 1.0001)), max(1, int(h / scale * 1.0001))))
        img.load()
        return to_rgb(img)
