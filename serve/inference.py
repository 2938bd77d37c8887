"""SageMaker PyTorch handlers for a dogbreed ``model.pt``; needs only torch and Pillow.

Shipped inside ``model.tar.gz`` as ``code/inference.py``; the local server (``python -m serve``) calls the
same functions, so both endpoints accept the same requests and answer the same JSON.

Requests: ``image/jpeg | image/png | application/x-image`` (any ``image/*``) with one image, or
``application/json`` ``{"instances": [{"b64": "<base64 image>"}, …], "top_k": 5}``. Only JPEG, PNG, WebP,
BMP, GIF, TIFF and PPM files are opened (:data:`FORMATS`; no other Pillow plugin ever sees the bytes).
Answer: ``{"predictions": [{"label", "probability", "top_k": [{"label", "probability"}, …]}, …]}``.
Client mistakes raise :class:`RequestError` carrying the HTTP status (400, 406, 413, 415; 503 when the
process runs out of memory); inside a SageMaker container it subclasses the toolkit's error, so the endpoint
answers with that status too, and an unexpected failure is a 500 whose message holds no exception text.
Limits (:class:`Limits`) come from the environment there: ``DOGBREED_MAX_IMAGE_PIXELS``,
``DOGBREED_MAX_REQUEST_PIXELS``, ``DOGBREED_MAX_ASPECT_RATIO``, ``DOGBREED_MAX_INSTANCES``,
``DOGBREED_TOP_K``.

In a SageMaker Batch Transform job (the platform sets ``SAGEMAKER_BATCH=true``) a request the handlers
refuse (4xx) is answered 200 ``{"error": "…"}`` instead: SageMaker writes no output for a record that got an
error status and marks the whole job Failed, so one undecodable image among millions would fail the job
and leave no trace of why. The answer becomes that image's error row (``serve/rows.py``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import torch
from PIL import Image

log = logging.getLogger(__name__)
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
JSON_SHAPE = '{"instances": [{"b64": "<base64 image>"}, …], "top_k": 5}'
#: The only Pillow plugins ever asked to open a request (phones' MPO JPEGs open through JPEG).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF, TIFF or PPM"

# The pixel limits are enforced below with a clear 413; Pillow's own warning would only add noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

try:  # present in SageMaker's PyTorch containers: lets the toolkit answer with our status code
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ErrorBase
except ImportError:

    class _ErrorBase(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase


class RequestError(_ErrorBase):
    """A bad request: ``status`` is the HTTP status, ``error`` says what was wrong and what to do."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(status, json.dumps({"error": error}), HTTPStatus(status).phrase)
        self.status = status
        self.error = error

    def __str__(self) -> str:
        return self.error


def _env(name: str, default: float, kind: type = int) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive {kind.__name__}")
    return value


def knob(name: str) -> str:
    """How a user raises limit ``name``: the server flag and the SageMaker environment variable."""
    return f"--{name.replace('_', '-')} or DOGBREED_{name.upper()}"


@dataclass(frozen=True)
class Limits:
    """What one request may cost; over any of them is a 413 naming the limit and how to raise it.

    Pixels are counted as decoded: a JPEG decoded at a reduced scale counts at that scale. The aspect ratio
    bounds what the model's resize allocates (shorter side → ``resize_size``, the longer one in proportion).
    """

    max_image_pixels: int = field(default_factory=lambda: _env("DOGBREED_MAX_IMAGE_PIXELS", 50_000_000))
    max_request_pixels: int = field(default_factory=lambda: _env("DOGBREED_MAX_REQUEST_PIXELS", 100_000_000))
    max_aspect_ratio: float = field(default_factory=lambda: _env("DOGBREED_MAX_ASPECT_RATIO", 10.0, float))
    max_instances: int = field(default_factory=lambda: _env("DOGBREED_MAX_INSTANCES", 64))


TOP_K = int(_env("DOGBREED_TOP_K", 5))


def in_batch_transform() -> bool:
    """Whether this process serves a SageMaker Batch Transform job (the platform sets SAGEMAKER_BATCH)."""
    return os.environ.get("SAGEMAKER_BATCH", "").lower() == "true"


@dataclass(frozen=True)
class Refused:
    """Batch Transform: why a record could not be scored; ``output_fn`` answers it as ``{"error": …}``."""

    error: str


@dataclass
class Batch:
    """What ``input_fn`` hands to ``predict_fn``: uint8 RGB (3, H, W) images
    and how many classes to return."""

    images: list[torch.Tensor]
    top_k: int = TOP_K


def load_torchscript(path: str, device: str | None = None) -> torch.jit.ScriptModule:
    """Load ``model.pt`` (a file, or the folder holding it): TorchScript with preprocessing and
    ``class_names`` inside; on the GPU when there is one unless ``device`` says otherwise.

    Named apart from ``dogbreed.load_model`` (which returns a ``Predictor``); ``load_model`` is the old name.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = path if os.path.isfile(path) else os.path.join(path, "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        model = torch.jit.load(path, map_location=device)
    if not hasattr(model, "class_names") or not hasattr(model, "predict_images"):
        raise RuntimeError(
            f"{path} is not a dogbreed export: it lacks class_names/predict_images (re-export it)"
        )
    return model.eval()


load_model = load_torchscript


def model_fn(model_dir: str) -> torch.jit.ScriptModule:
    """SageMaker: load the model from the unpacked ``model.tar.gz`` folder."""
    return load_torchscript(model_dir)


# ---- Decoding. Mirrors dogbreed/data/images.py (which this file cannot import) function for function, so
# served and evaluated images look the same to the model; tests/test_image_parity.py holds them together.


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


# ---- Requests


class PixelBudget:
    """Decoded pixels left for one request (all its images together)."""

    def __init__(self, limits: Limits) -> None:
        self.limit = self.left = limits.max_request_pixels

    def spend(self, pixels: int, what: str) -> None:
        if pixels > self.left:
            raise RequestError(
                413,
                f"{what}: decoding it would bring this request to {self.limit - self.left + pixels:,} "
                f"pixels, over the limit of {self.limit:,} per request ({knob('max_request_pixels')}); "
                "send fewer or smaller images",
            )
        self.left -= pixels


def check_size(width: int, height: int, what: str, limits: Limits) -> None:
    """413 unless the header's dimensions are within the pixel and aspect-ratio limits."""
    if width * height > limits.max_image_pixels:
        raise RequestError(
            413,
            f"{what}: image is {width}×{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_image_pixels:,} ({knob('max_image_pixels')}); downscale it",
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > limits.max_aspect_ratio:
        raise RequestError(
            413,
            f"{what}: image is {width}×{height}, aspect ratio {ratio:.1f}:1, over the limit of "
            f"{limits.max_aspect_ratio:g}:1 ({knob('max_aspect_ratio')}); crop it",
        )


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) < 160 else text[:157] + "..."


def decode_image(
    data: bytes,
    what: str = "body",
    limits: Limits | None = None,
    min_side: int | None = None,
    budget: PixelBudget | None = None,
) -> torch.Tensor:
    """Encoded image bytes → uint8 RGB tensor (3, H, W).

    Format, dimensions and aspect ratio are checked from the header before any pixel is decoded
    (decompression bombs → 413). With ``min_side`` (the model's resize size) every large image is reduced on
    decode exactly as the training data loader does (``draft`` for JPEG, ``reduce`` for the others).
    """
    limits = limits or Limits()
    if not data:
        raise RequestError(400, f"{what} is empty: send the bytes of a {FORMAT_NAMES} image")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:  # Pillow's own guard, at 2 × its limit: far over ours
        raise RequestError(
            413,
            f"{what}: image is over the limit of {limits.max_image_pixels:,} pixels "
            f"({knob('max_image_pixels')}); downscale it",
        ) from e
    except Exception as e:  # noqa: BLE001 — any failure to parse a client's header is the client's 400
        raise RequestError(
            400, f"{what} is not a {FORMAT_NAMES} image ({len(data)} bytes): send one of those"
        ) from e
    with img:
        check_size(*img.size, what, limits)
        draft(img, min_side)
        (budget or PixelBudget(limits)).spend(img.width * img.height, what)
        try:
            rgb = decode_rgb(img, min_side)
        except MemoryError as e:
            raise RequestError(503, f"{what}: out of memory while decoding; retry later") from e
        except Exception as e:  # noqa: BLE001 — truncated or corrupt client data, whatever Pillow raises
            raise RequestError(
                400, f"{what}: image data is truncated or corrupt ({_short(e)}); send the complete file"
            ) from e
    return (
        torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        .view(rgb.height, rgb.width, 3)
        .permute(2, 0, 1)
    )


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in obj if keys.count(k) > 1})  # few keys: a valid object has ≤ 2
        raise RequestError(400, f"JSON object repeats key(s) {repeated}: send each key once")
    return obj


def _check_structure(body: bytes | str, limits: Limits) -> None:
    """Refuse, before parsing, a body with more JSON elements than any valid request has: base64 holds no
    brackets, commas or colons, so a valid body has a few per instance. This bounds what parsing allocates
    (``[[],[],…]`` would otherwise cost ~20× its size) to about the size of the body."""
    marks = (b"[", b"{", b",", b":") if isinstance(body, bytes) else ("[", "{", ",", ":")
    if sum(body.count(m) for m in marks) > 8 * limits.max_instances + 32:
        raise RequestError(
            400, f"JSON body has far more elements than {limits.max_instances} instances need: {JSON_SHAPE}"
        )


def _b64decode(text: str, what: str) -> bytes:
    try:
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:  # line breaks (MIME-style base64) are fine; anything else is not
            return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{what} is not valid base64 ({_short(e)})") from e


def parse_instances(body: bytes | str, limits: Limits | None = None) -> tuple[list[bytes], int]:
    """A JSON batch → (encoded images, top_k); every mistake names the field."""
    limits = limits or Limits()
    _check_structure(body, limits)
    try:
        payload = json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError as e:
        raise RequestError(400, f"JSON body is nested too deeply; send {JSON_SHAPE}") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise RequestError(400, f"body is not valid JSON ({_short(e)}); send {JSON_SHAPE}") from e
    if not isinstance(payload, dict):
        raise RequestError(400, f"JSON body must be an object: {JSON_SHAPE}")
    unknown = sorted(set(payload) - {"instances", "top_k"})
    if unknown:
        raise RequestError(400, f"unknown key(s) {unknown} in the JSON body: {JSON_SHAPE}")
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, f"JSON body needs a non-empty 'instances' list: {JSON_SHAPE}")
    if len(instances) > limits.max_instances:
        raise RequestError(
            413,
            f"'instances' has {len(instances)} images, over the limit of {limits.max_instances} "
            f"({knob('max_instances')}); split the batch",
        )
    top_k = payload.get("top_k", TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(400, f"'top_k' must be a positive integer, got {repr(top_k)[:60]}")
    encoded = []
    for i, item in enumerate(instances):
        if not isinstance(item, dict) or set(item) != {"b64"} or not isinstance(item["b64"], str):
            raise RequestError(400, f'instances[{i}] must be {{"b64": "<base64 image>"}} and nothing else')
        encoded.append(_b64decode(item["b64"], f"instances[{i}].b64"))
    return encoded, top_k


def decode_request(
    body: bytes | str,
    content_type: str | None,
    limits: Limits | None = None,
    min_side: int | None = None,
    admit: Callable[[int], None] | None = None,
) -> Batch:
    """One image (``image/*``, ``application/x-image``) or a JSON batch → :class:`Batch`.

    ``admit(n)`` is told the number of images before any is decoded (the local server's queue admission).
    """
    limits = limits or Limits()
    budget = PixelBudget(limits)
    media = _media_type(content_type)
    if media in IMAGE_TYPES or media.startswith("image/"):
        if isinstance(body, str):
            raise RequestError(400, "image body arrived as text: send the raw image bytes")
        if admit:
            admit(1)
        return Batch([decode_image(body, "body", limits, min_side, budget)])
    if media == JSON_TYPE:
        encoded, top_k = parse_instances(body, limits)
        if admit:
            admit(len(encoded))
        images = [decode_image(d, f"instances[{i}]", limits, min_side, budget) for i, d in enumerate(encoded)]
        return Batch(images, top_k)
    raise RequestError(
        415,
        f"unsupported Content-Type {content_type or '(none)'!r}: use {', '.join(IMAGE_TYPES)} or {JSON_TYPE}",
    )


def out_of_memory(e: BaseException) -> bool:
    """MemoryError (Pillow, Python), or torch's CPU or CUDA allocator failing."""
    if isinstance(e, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "allocate memory" in str(e)


def handler(stage: str):
    """Wrap a SageMaker handler: an unexpected exception is logged in full and re-raised as a 500 (503 when
    memory ran out) whose message names only the stage; the toolkit sends that message and our own frame."""

    def wrap(fn):
        @functools.wraps(fn)  # keeps the signature the toolkit counts parameters of
        def run(*args):
            try:
                return fn(*args)
            except RequestError:
                raise
            except Exception as e:  # noqa: BLE001 — the log gets the details, the client a clean 500/503
                log.exception("%s failed", stage)
                if out_of_memory(e):
                    raise RequestError(503, f"out of memory while {stage}; retry later") from None
                raise RequestError(500, f"internal error while {stage}; the endpoint's log has it") from None

        return run

    return wrap


@handler("reading the request")
def input_fn(body: bytes | str, content_type: str | None) -> Batch | Refused:
    """SageMaker: request body → :class:`Batch` (limits from the ``DOGBREED_*`` environment variables);
    in a Batch Transform job a refused request → :class:`Refused` (see the module docstring).

    The toolkit counts parameters (a third one would receive its context), so keep exactly two.
    """
    try:
        return decode_request(body, content_type)
    except RequestError as e:
        if e.status >= 500 or not in_batch_transform():
            raise
        return Refused(e.error)


def probabilities(images: list[torch.Tensor], model: torch.jit.ScriptModule) -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU for differently sized uint8 images."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model.predict_images([img.to(device) for img in images]).float().cpu()


def top_predictions(probs: torch.Tensor, class_names: list[str], top_k: int = TOP_K) -> list[dict]:
    """Rows of probabilities → the contract's prediction dicts, best first."""
    k = max(1, min(top_k, len(class_names)))
    values, indices = probs.topk(k, dim=1)
    out = []
    for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True):
        top = [{"label": class_names[i], "probability": round(v, 6)} for v, i in zip(vals, idxs, strict=True)]
        out.append({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})
    return out


@handler("running the model")
def predict_fn(batch: Batch | Refused, model: torch.jit.ScriptModule) -> list[dict] | Refused:
    """A :class:`Batch` → one prediction dict per image (a :class:`Refused` passes through)."""
    if isinstance(batch, Refused):
        return batch
    return top_predictions(probabilities(batch.images, model), list(model.class_names), batch.top_k)


def check_accept(accept: str | None) -> None:
    """Raise 406 unless the client accepts JSON (a missing Accept header means anything goes)."""
    wanted = [_media_type(a) for a in (accept or JSON_TYPE).split(",")]
    if not any(a in (JSON_TYPE, "*/*", "application/*", "") for a in wanted):
        raise RequestError(406, f"cannot answer with {accept!r}: responses are {JSON_TYPE}")


@handler("writing the answer")
def output_fn(predictions: list[dict] | Refused, accept: str | None = JSON_TYPE) -> str:
    """Prediction dicts → ``{"predictions": […]}`` JSON (a :class:`Refused` → ``{"error": …}``); only JSON
    is offered."""
    check_accept(accept)
    if isinstance(predictions, Refused):
        return json.dumps({"error": predictions.error})
    return json.dumps({"predictions": predictions})
