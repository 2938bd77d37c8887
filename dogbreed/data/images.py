"""Decode image files into RGB PIL images, reducing large ones on decode to the size the model needs.

Only the formats in :data:`FORMATS` are opened (training, ``python -m dogbreed.data check`` and prediction
alike; no other Pillow plugin sees the bytes). ``serve/inference.py`` carries a copy of the functions below
(it may import only torch and Pillow); ``tests/test_image_parity.py`` keeps the two identical.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

#: The only Pillow plugins asked to open an image (phones' MPO JPEGs open through JPEG).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF, TIFF or PPM"


@functools.cache
def _lut16() -> list[int]:
    return [(v * 255 + 32767) // 65535 for v in range(65536)]


def eight_bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images → 8-bit L: 0–65535 scaled to 0–255 (rounded) when the mode is
    16-bit or a value exceeds 255, else taken as they are."""
    wide = img.mode.startswith("I;16") or img.getextrema()[1] > 255
    if img.mode == "F":
        return img.point(lambda v: v * (255.0 / 65535.0)).convert("L") if wide else img.convert("L")
    img = img if img.mode == "I" else img.convert("I")
    return img.point(_lut16(), "L") if wide else img.convert("L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, 16/32-bit, float, palette, 1-bit, RGBA/LA and CMYK images as 8-bit RGB.

    Transparent areas are composited on white, as a viewer shows them.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = eight_bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def draft(img: Image.Image, min_side: int | None) -> None:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale, keeping the shorter side ≥ ``min_side``."""
    if min_side and img.format in ("JPEG", "MPO"):
        w, h = img.size
        scale = min(w, h) / float(min_side)
        if scale >= 2:
            img.draft("RGB", (max(1, int(w / scale * 1.0001)), max(1, int(h / scale * 1.0001))))


def reduce(img: Image.Image, min_side: int | None) -> Image.Image:
    """Box-average a decoded image by the largest whole factor that keeps the shorter side ≥ ``min_side``.

    Every format ends with its shorter side in [min_side, 2·min_side), as JPEGs reduced on decode do; alpha
    is averaged premultiplied (Pillow's ``reduce``); palette, 1-bit and wide images are made 8-bit first.
    """
    factor = min(img.size) // min_side if min_side else 1
    if factor < 2:
        return img
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = eight_bit(img)
    return img.reduce(factor)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright; phones store portraits sideways); 1 when the EXIF is unreadable."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 — the pixels are fine; only the orientation tag is broken
        return 1


def decode_rgb(img: Image.Image, min_side: int | None) -> Image.Image:
    """An opened (and drafted) image → its pixels as upright 8-bit RGB, reduced for ``min_side``."""
    img.load()
    turn = _TRANSPOSE.get(orientation(img))
    rgb = to_rgb(reduce(img, min_side))
    return rgb if turn is None else rgb.transpose(turn)


def open_image(path: str | Path | object) -> Image.Image:
    """``Image.open`` restricted to :data:`FORMATS`; anything else raises ``UnidentifiedImageError``."""
    return Image.open(path, formats=FORMATS)


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open ``path`` as upright RGB; with ``min_side``, decode large images at a reduced scale (libjpeg's
    ``draft`` for JPEGs, a box ``reduce`` for the others) keeping the shorter side ≥ ``min_side``."""
    with open_image(path) as img:
        draft(img, min_side)
        return decode_rgb(img, min_side)
