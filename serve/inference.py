"""SageMaker PyTorch handlers for a dogbreed ``model.pt``; needs only torch and Pillow.

Shipped inside ``model.tar.gz`` as ``code/inference.py``; the local server (``python -m serve``) calls the
same functions, so both endpoints accept the same requests and answer the same JSON.

Requests: ``image/jpeg | image/png | application/x-image`` (any ``image/*`` Pillow reads) with one image,
or ``application/json`` ``{"instances": [{"b64": "<base64 image>"}, …], "top_k": 5}``.
Answer: ``{"predictions": [{"label", "probability", "top_k": [{"label", "probability"}, …]}, …]}``.
Client mistakes raise :class:`RequestError` carrying the HTTP status (400, 406, 413, 415); inside a
SageMaker container it subclasses the toolkit's error, so the endpoint answers with that status too.
Limits come from the environment there: ``DOGBREED_MAX_IMAGE_PIXELS``, ``DOGBREED_MAX_INSTANCES``,
``DOGBREED_TOP_K``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import warnings
from dataclasses import dataclass
from http import HTTPStatus

import torch
from PIL import Image, UnidentifiedImageError

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
MAX_IMAGE_PIXELS = int(os.environ.get("DOGBREED_MAX_IMAGE_PIXELS", 50_000_000))
MAX_INSTANCES = int(os.environ.get("DOGBREED_MAX_INSTANCES", 64))
TOP_K = int(os.environ.get("DOGBREED_TOP_K", 5))
JSON_SHAPE = '{"instances": [{"b64": "<base64 image>"}, …]}'

# The pixel limit is enforced below with a clear 413; Pillow's own warning would only add noise.
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


@dataclass
class Batch:
    """What ``input_fn`` hands to ``predict_fn``: uint8 RGB (3, H, W) images
    and how many classes to return."""

    images: list[torch.Tensor]
    top_k: int = TOP_K


def load_model(path: str, device: str | None = None) -> torch.jit.ScriptModule:
    """Load ``model.pt`` (a file, or the folder holding it): TorchScript with preprocessing and
    ``class_names`` inside; on the GPU when there is one unless ``device`` says otherwise."""
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


def model_fn(model_dir: str) -> torch.jit.ScriptModule:
    """SageMaker: load the model from the unpacked ``model.tar.gz`` folder."""
    return load_model(model_dir)


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette, RGBA/LA and CMYK images as 8-bit RGB; transparency composited on white.

    Mirrors ``dogbreed.data.images.to_rgb`` (which this file cannot import) so served and evaluated
    images look the same to the model.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        top = 65535 if img.mode.startswith("I;16") or img.getextrema()[1] > 255 else 255
        img = img.convert("I").point(lambda v: v * (255.0 / top)).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    data: bytes, what: str = "body", max_pixels: int = MAX_IMAGE_PIXELS, min_side: int | None = None
) -> torch.Tensor:
    """Encoded image bytes → uint8 RGB tensor (3, H, W).

    Dimensions are checked from the header before any pixel is decoded (decompression bombs → 413).
    With ``min_side``, libjpeg decodes large JPEGs at a reduced scale whose shorter side stays
    ≥ ``min_side`` (the model's resize size), exactly as the training data loader does.
    """
    if not data:
        raise RequestError(400, f"{what} is empty: send the bytes of a JPEG or PNG image")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"{what}: image too large ({e}); downscale it") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RequestError(
            400, f"{what} is not an image Pillow can read ({len(data)} bytes): send JPEG or PNG bytes"
        ) from e
    with img:
        w, h = img.size
        if w * h > max_pixels:
            raise RequestError(
                413,
                f"{what}: image is {w}×{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                "downscale it",
            )
        if min_side and img.format == "JPEG":
            scale = min(w, h) / float(min_side)
            if scale >= 2:
                img.draft("RGB", (max(1, int(w / scale * 1.0001)), max(1, int(h / scale * 1.0001))))
        try:
            img.load()
            rgb = to_rgb(img)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise RequestError(
                400, f"{what}: image data is truncated or corrupt ({e}); send the complete file"
            ) from e
    return (
        torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        .view(rgb.height, rgb.width, 3)
        .permute(2, 0, 1)
    )


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def parse_instances(body: bytes | str, max_instances: int = MAX_INSTANCES) -> tuple[list[bytes], int]:
    """A JSON batch → (encoded images, top_k); every mistake names the field."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"body is not valid JSON ({e}); send {JSON_SHAPE}") from e
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, f"JSON body needs a non-empty 'instances' list: {JSON_SHAPE}")
    if len(instances) > max_instances:
        raise RequestError(
            413,
            f"'instances' has {len(instances)} images, over the limit of {max_instances}; split the batch",
        )
    top_k = payload.get("top_k", TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(400, f"'top_k' must be a positive integer, got {top_k!r}")
    encoded = []
    for i, item in enumerate(instances):
        b64 = item.get("b64") if isinstance(item, dict) else None
        if not isinstance(b64, str):
            raise RequestError(400, f'instances[{i}] must be {{"b64": "<base64 image>"}}')
        try:
            encoded.append(base64.b64decode("".join(b64.split()), validate=True))
        except (binascii.Error, ValueError) as e:
            raise RequestError(400, f"instances[{i}].b64 is not valid base64 ({e})") from e
    return encoded, top_k


def decode_request(
    body: bytes | str,
    content_type: str | None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_instances: int = MAX_INSTANCES,
    min_side: int | None = None,
) -> Batch:
    """One image (``image/*``, ``application/x-image``) or a JSON batch → :class:`Batch`."""
    media = _media_type(content_type)
    if media in IMAGE_TYPES or media.startswith("image/"):
        if isinstance(body, str):
            raise RequestError(400, "image body arrived as text: send the raw image bytes")
        return Batch([decode_image(body, "body", max_pixels, min_side)])
    if media == JSON_TYPE:
        encoded, top_k = parse_instances(body, max_instances)
        return Batch(
            [decode_image(d, f"instances[{i}]", max_pixels, min_side) for i, d in enumerate(encoded)], top_k
        )
    raise RequestError(
        415,
        f"unsupported Content-Type {content_type or '(none)'!r}: use {', '.join(IMAGE_TYPES)} or {JSON_TYPE}",
    )


def input_fn(body: bytes | str, content_type: str | None) -> Batch:
    """SageMaker: request body → :class:`Batch` (limits from the ``DOGBREED_*`` environment variables).

    The toolkit counts parameters (a third one would receive its context), so keep exactly two.
    """
    return decode_request(body, content_type)


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


def predict_fn(batch: Batch, model: torch.jit.ScriptModule) -> list[dict]:
    """A :class:`Batch` → one prediction dict per image."""
    return top_predictions(probabilities(batch.images, model), list(model.class_names), batch.top_k)


def check_accept(accept: str | None) -> None:
    """Raise 406 unless the client accepts JSON (a missing Accept header means anything goes)."""
    wanted = [_media_type(a) for a in (accept or JSON_TYPE).split(",")]
    if not any(a in (JSON_TYPE, "*/*", "application/*", "") for a in wanted):
        raise RequestError(406, f"cannot answer with {accept!r}: responses are {JSON_TYPE}")


def output_fn(predictions: list[dict], accept: str | None = JSON_TYPE) -> str:
    """Prediction dicts → ``{"predictions": […]}`` JSON; only JSON is offered."""
    check_accept(accept)
    return json.dumps({"predictions": predictions})
