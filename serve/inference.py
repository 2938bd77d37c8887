"""SageMaker PyTorch handler for a dogbreed ``model.pt``: needs only torch and Pillow.

Shipped inside ``model.tar.gz`` as ``code/inference.py``.
"""

from __future__ import annotations

import base64
import io
import json
import os

import torch
from PIL import Image

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")


def model_fn(model_dir: str) -> torch.jit.ScriptModule:
    """Load ``model.pt`` (TorchScript with preprocessing and ``class_names`` inside)."""
    model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
    return model.eval()


def _to_tensor(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def input_fn(body: bytes, content_type: str) -> list[torch.Tensor]:
    """One image (image/*) or a JSON batch ``{"instances": [{"b64": …}, …]}`` → uint8 (3, H, W) tensors."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type in IMAGE_TYPES:
        return [_to_tensor(body)]
    if content_type == "application/json":
        payload = json.loads(body)
        return [_to_tensor(base64.b64decode(item["b64"])) for item in payload["instances"]]
    raise ValueError(f"Unsupported content type {content_type!r}")


def predict_fn(images: list[torch.Tensor], model: torch.jit.ScriptModule) -> torch.Tensor:
    with torch.inference_mode():
        return model.predict_images(images)


def output_fn(probabilities: torch.Tensor, accept: str = "application/json", model=None, top_k: int = 5) -> str:
    names = list(model.class_names) if model is not None else [str(i) for i in range(probabilities.shape[1])]
    k = min(top_k, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=1)
    predictions = []
    for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True):
        top = [{"label": names[i], "probability": v} for v, i in zip(vals, idxs, strict=True)]
        predictions.append({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})
    return json.dumps({"predictions": predictions})
