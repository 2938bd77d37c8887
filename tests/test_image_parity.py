"""serve/inference.py keeps its own copy of the image decoding (it may import only torch and Pillow): the odd
images a user or a dataset holds come out of it pixel for pixel as they come out of dogbreed/data/images.py,
and only the formats both claim are ever opened (by the server, the SageMaker handler, training and
``python -m dogbreed.data check`` alike)."""

from __future__ import annotations

import functools
import inspect
import io

import pytest
import torch
from image_bytes import encode
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from dogbreed.data import images as library
from dogbreed.data.check import inspect_file
from serve import inference as served
from serve.inference import RequestError, decode_image

SHARED = ("_lut16", "eight_bit", "to_rgb", "draft", "reduce", "orientation", "decode_rgb")


def exif_rotated() -> bytes:
    """A 60×40 landscape JPEG whose EXIF says: rotate 90° clockwise to view (a phone portrait)."""
    img = Image.new("RGB", (60, 40), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 30, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif, quality=95)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), color) for color in ((250, 0, 0), (0, 0, 250))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def gradient(mode: str, size: tuple[int, int], top: int) -> Image.Image:
    img = Image.new("I", size)
    img.putdata([(x * 37 + y * 11) % (top + 1) for y in range(size[1]) for x in range(size[0])])
    return img if mode == "I" else img.convert(mode)


@functools.cache
def odd_images() -> dict[str, bytes]:
    palette_t = Image.new("P", (40, 30), 0)
    palette_t.putpalette([0, 255, 0, 255, 0, 0] * 128)
    palette_t.paste(1, (0, 0, 20, 30))
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 160), (10, 5, 30, 25))
    return {
        "P": encode(Image.new("RGB", (40, 30), (0, 90, 200)).convert("P"), "PNG"),
        "P+transparency": encode(palette_t, "PNG", transparency=0),
        "P (RGBA palette)": encode(palette_t.convert("RGBA").quantize(8), "PNG"),
        "LA": encode(Image.new("LA", (40, 30), (90, 128)), "PNG"),
        "I;16": encode(gradient("I;16", (40, 30), 65535), "PNG"),
        "I;16 dark": encode(gradient("I;16", (40, 30), 200), "PNG"),
        "I (32-bit TIFF)": encode(gradient("I", (40, 30), 70000), "TIFF"),
        "F (float TIFF)": encode(gradient("I", (40, 30), 60000).convert("F"), "TIFF"),
        "CMYK JPEG": encode(Image.new("CMYK", (40, 30), (10, 80, 200, 0)), "JPEG"),
        "CMYK TIFF": encode(Image.new("CMYK", (40, 30), (10, 80, 200, 30)), "TIFF"),
        "1-bit PNG": encode(Image.new("1", (40, 30), 1), "PNG"),
        "1-bit BMP": encode(Image.new("1", (40, 30), 1), "BMP"),
        "RGBA PNG": encode(rgba, "PNG"),
        "RGBA WebP": encode(rgba, "WEBP", lossless=True),
        "EXIF-rotated JPEG": exif_rotated(),
        "animated GIF": animated_gif(),
        "large JPEG (reduced on decode)": encode(Image.effect_noise((1800, 1200), 40).convert("RGB"), "JPEG"),
        "huge JPEG (draft, then reduce)": encode(Image.new("RGB", (5400, 3600), (9, 99, 199)), "JPEG"),
        "large RGBA PNG (reduced)": encode(rgba.resize((1200, 900)), "PNG"),
        "large palette PNG (reduced)": encode(palette_t.resize((800, 600)), "PNG", transparency=0),
        "large I;16 PNG (reduced)": encode(gradient("I;16", (700, 500), 65535), "PNG"),
        "large 1-bit PNG (reduced)": encode(Image.effect_noise((700, 500), 90).convert("1"), "PNG"),
        "PPM": encode(Image.new("RGB", (40, 30), (1, 2, 3)), "PPM"),
    }


def test_the_copied_functions_are_the_library_s_own():
    for name in SHARED:
        assert inspect.getsource(getattr(served, name)) == inspect.getsource(getattr(library, name)), name
    assert served.FORMATS == library.FORMATS and served.FORMAT_NAMES == library.FORMAT_NAMES
    assert served._TRANSPOSE == library._TRANSPOSE


@pytest.mark.parametrize("min_side", [None, 224])
@pytest.mark.parametrize("kind", list(odd_images()))
def test_served_pixels_equal_the_training_loader_s(kind, min_side, tmp_path):
    data = odd_images()[kind]
    path = tmp_path / "image"
    path.write_bytes(data)
    expected = pil_to_tensor(library.load_rgb(path, min_side))
    got = decode_image(data, min_side=min_side)
    assert got.dtype == torch.uint8 and got.shape[0] == 3
    assert torch.equal(got, expected), kind
    if min_side:
        assert min(got.shape[1:]) < 2 * min_side  # every format is reduced on decode
        assert min(got.shape[1:]) >= min(min_side, min(Image.open(io.BytesIO(data)).size))


def test_what_the_shared_decoder_does_to_odd_images():
    rgb = decode_image(exif_rotated())  # upright: a portrait, the blue half on top
    assert tuple(rgb.shape) == (3, 60, 40)
    assert rgb[2, 5, 20] > 150 > rgb[0, 5, 20] and rgb[0, 55, 20] > 150 > rgb[2, 55, 20]
    assert tuple(decode_image(animated_gif())[:, 0, 0].tolist())[0] > 200  # the first frame (red)
    sixteen = decode_image(odd_images()["I;16"])[0].flatten().tolist()
    source = list(gradient("I;16", (40, 30), 65535).getdata())
    assert sixteen == [(v * 255 + 32767) // 65535 for v in source]  # 0–65535 → 0–255, rounded
    dark = decode_image(odd_images()["I;16 dark"])[0].max()
    assert dark == 1  # 16-bit means 16-bit: a dark image stays dark (max 200/65535)
    white = decode_image(odd_images()["RGBA PNG"])
    assert tuple(white[:, 0, 0].tolist()) == (255, 255, 255)  # transparency composited on white
    huge = decode_image(odd_images()["huge JPEG (draft, then reduce)"], min_side=224)
    assert tuple(huge.shape) == (3, 225, 338)  # 1/8 by libjpeg (675×450), then halved: shorter side ≥ 224


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n"


@pytest.mark.parametrize(
    "make",
    [
        eps,
        lambda: encode(Image.new("RGB", (16, 16)), "ICO"),
        lambda: encode(Image.new("RGB", (16, 16)), "TGA"),
        lambda: encode(Image.new("RGB", (16, 16)), "PCX"),
    ],
    ids=["eps-runs-ghostscript", "ico", "tga", "pcx"],
)
def test_formats_off_the_list_are_never_opened(make, tmp_path):
    data = make()
    Image.open(io.BytesIO(data))  # Pillow itself would open it, so the list is what keeps it out
    with pytest.raises(RequestError) as info:
        decode_image(data)
    assert info.value.status == 400 and "is not a JPEG, PNG, WebP, BMP, GIF, TIFF or PPM image" in str(
        info.value
    )
    path = tmp_path / "sneaky.jpg"
    path.write_bytes(data)
    with pytest.raises(UnidentifiedImageError):
        library.load_rgb(path)
    result = inspect_file(str(path))
    assert result.kind == "not_image" and "format training opens" in result.error
