"""Encoded test images for the serving tests: any PIL image as bytes, and a decompression-bomb-shaped PNG."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (a decompression bomb's shape) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


#: 8660 × 5773 = 49,994,180 pixels: just under the default --max-image-pixels (50 M).
MP50 = (8660, 5773)


def b64_batch(*images: bytes, **extra) -> bytes:
    """A JSON request body carrying ``images``."""
    import base64
    import json

    return json.dumps(
        {"instances": [{"b64": base64.b64encode(i).decode()} for i in images], **extra}
    ).encode()


@functools.cache
def worst_cases() -> dict[str, tuple[bytes, str, int]]:
    """The costliest requests the default limits let through, and those they must stop:
    name → (body, Content-Type, expected status). Used by tests/test_serve_hostile.py and
    bench/serve_memory.py (which measures what each adds to the server's resident memory)."""
    rgba = encode(Image.new("RGBA", MP50, (10, 20, 30, 128)), "PNG", compress_level=1)
    blank7000 = encode(Image.new("L", (7000, 7000)), "PNG", compress_level=9)
    sliver = encode(Image.new("L", (100, 490_000)), "PNG", compress_level=9)
    return {
        "50 MP RGBA PNG": (rgba, "image/png", 200),
        "50 MP 16-bit PNG": (
            encode(Image.new("I;16", MP50, 1000), "PNG", compress_level=1),
            "image/png",
            200,
        ),
        "50 MP palette PNG with transparency": (
            encode(Image.new("P", MP50, 3), "PNG", compress_level=1, transparency=3),
            "image/png",
            200,
        ),
        "50 MP float TIFF": (
            encode(Image.new("F", MP50, 3.0), "TIFF", compression="tiff_adobe_deflate"),
            "image/tiff",
            200,
        ),
        "50 MP GIF": (encode(Image.new("P", MP50, 1), "GIF"), "image/gif", 200),
        "50 MP RGBA WebP": (
            encode(Image.new("RGBA", (16383, 3051), (1, 2, 3, 100)), "WEBP", lossless=True, method=0),
            "image/webp",
            200,
        ),
        "50 MP JPEG": (encode(Image.new("RGB", MP50, (10, 20, 30)), "JPEG"), "image/jpeg", 200),
        "2 × 50 MP RGBA PNG in one JSON": (b64_batch(rgba, rgba), "application/json", 200),
        "3 × 50 MP RGBA PNG in one JSON": (b64_batch(rgba, rgba, rgba), "application/json", 413),
        "64 blank 49 MP PNGs in one JSON": (b64_batch(*[blank7000] * 64), "application/json", 413),
        "100 × 490,000 PNG": (sliver, "image/png", 413),
        "64 × (100 × 490,000) PNGs in one JSON": (b64_batch(*[sliver] * 64), "application/json", 413),
        "10 MiB JSON of empty objects": (b"[" + b"{}," * (3 * 2**20) + b"{}]", "application/json", 400),
        "10 MiB base64 that is no image": (
            b64_batch(b"\0" * (7 * 2**20)),
            "application/json",
            400,
        ),
        "100,000-deep nested JSON": (b'{"instances": ' + b"[" * 100_000, "application/json", 400),
    }


def nested(depth: int) -> bytes:
    return b'{"instances": [{"b64": ' + b"[" * depth + b"]" * depth + b"}]}"


@functools.cache
def malformed_requests() -> dict[str, tuple[bytes, str, int]]:
    """Bodies a buggy or hostile client sends: name → (body, Content-Type, expected 4xx status)."""
    return {
        "EPS sent as image/jpeg": (
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nshowpage\n",
            "image/jpeg",
            400,
        ),
        "ICO": (encode(Image.new("RGB", (16, 16)), "ICO"), "image/png", 400),
        "nested arrays": (b"[" * 200_000, "application/json", 400),
        "nested inside b64": (nested(5000), "application/json", 400),
        "nested objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json", 400),
        "not UTF-8": (b'{"instances": "\xff\xfe"}', "application/json", 400),
        "top level is a list": (b'[{"b64": "eA=="}]', "application/json", 400),
        "top level is a string": (b'"hello"', "application/json", 400),
        "top level is null": (b"null", "application/json", 400),
        "instances is an object": (b'{"instances": {"b64": "eA=="}}', "application/json", 400),
        "instances is a string": (b'{"instances": "eA=="}', "application/json", 400),
        "instances is null": (b'{"instances": null}', "application/json", 400),
        "instances is empty": (b'{"instances": []}', "application/json", 400),
        "instance is a list": (b'{"instances": [["eA=="]]}', "application/json", 400),
        "instance is a string": (b'{"instances": ["eA=="]}', "application/json", 400),
        "instance is empty": (b'{"instances": [{}]}', "application/json", 400),
        "b64 is a number": (b'{"instances": [{"b64": 7}]}', "application/json", 400),
        "b64 is null": (b'{"instances": [{"b64": null}]}', "application/json", 400),
        "b64 is empty": (b'{"instances": [{"b64": ""}]}', "application/json", 400),
        "b64 is not base64": (b'{"instances": [{"b64": "\xc3\xa9t\xc3\xa9"}]}', "application/json", 400),
        "extra key in instance": (b'{"instances": [{"b64": "eA==", "name": "x"}]}', "application/json", 400),
        "unknown top-level key": (b'{"instances": [{"b64": "eA=="}], "topk": 3}', "application/json", 400),
        "duplicated instances": (
            b'{"instances": [{"b64": "eA=="}], "instances": []}',
            "application/json",
            400,
        ),
        "duplicated b64": (b'{"instances": [{"b64": "eA==", "b64": "eA=="}]}', "application/json", 400),
        "top_k is a string": (b64_batch(b"x", top_k="5"), "application/json", 400),
        "top_k is a float": (b64_batch(b"x", top_k=2.0), "application/json", 400),
        "top_k is true": (b64_batch(b"x", top_k=True), "application/json", 400),
        "top_k is zero": (b64_batch(b"x", top_k=0), "application/json", 400),
        "top_k is negative": (b64_batch(b"x", top_k=-3), "application/json", 400),
        "top_k is NaN": (b'{"instances": [{"b64": "eA=="}], "top_k": NaN}', "application/json", 400),
        "top_k has 5,000 digits": (
            b'{"instances": [{"b64": "eA=="}], "top_k": ' + b"9" * 5000 + b"}",
            "application/json",
            400,
        ),
        "top_k is a list": (b64_batch(b"x", top_k=[5]), "application/json", 400),
        "65 instances": (b64_batch(*[b"x"] * 65), "application/json", 413),
        "header-only 10-gigapixel PNG": (png_header_only(100_000, 100_000), "image/png", 413),
        "empty body": (b"", "image/jpeg", 400),
        "text/plain": (b"hello", "text/plain", 415),
    }
