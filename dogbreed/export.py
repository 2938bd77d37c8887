"""Export a trained BreedClassifier as a self-contained TorchScript file and a SageMaker model.tar.gz.

``model.pt`` takes a **uint8 RGB batch (N, 3, H, W)** of any size (or, through ``predict_images``, a
list of differently sized uint8 (3, H, W) images), resizes/crops/normalises inside exactly as the
backbone's weights expect, and returns **class probabilities (N, classes)** (softmax, not logits).
Class names travel with it as the ``class_names`` attribute and in the ``dogbreed.json`` extra file,
so loading it needs nothing but torch.
"""

import importlib.util
import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dogbreed.atomic import write_bytes
from dogbreed.backbones import Preprocess
from dogbreed.data.transforms import eval_transform
from dogbreed.model import BreedClassifier

log = logging.getLogger(__name__)
META_FILE = "dogbreed.json"


class ExportedClassifier(nn.Module):
    """uint8 images in, probabilities out; preprocessing identical to the evaluation transform."""

    class_names: list[str]

    def __init__(self, net: nn.Module, pre: Preprocess, class_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.resize_size = int(pre.resize_size)
        self.crop_size = int(pre.crop_size)
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.class_names = list(class_names)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) → normalised float (N, 3, crop, crop), as torchvision's Resize + CenterCrop."""
        h, w = int(images.shape[-2]), int(images.shape[-1])
        short, long = min(h, w), max(h, w)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        size = [new_short, new_long] if h <= w else [new_long, new_short]
        if images.dtype == torch.uint8 and images.device.type == "cpu":
            # torchvision's own uint8 kernel: bit-identical to the evaluation transform
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).float()
        else:
            x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0.0, 255.0)
        top = int(round((size[0] - self.crop_size) / 2.0))
        left = int(round((size[1] - self.crop_size) / 2.0))
        x = x[:, :, top : top + self.crop_size, left : left + self.crop_size]
        return (x / 255.0 - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB batch (N, 3, H, W) → probabilities (N, len(class_names))."""
        return torch.softmax(self.net(self.preprocess(images)), dim=1)

    @torch.jit.export
    def predict_images(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Differently sized uint8 (3, H, W) images → probabilities (N, classes)."""
        batch = torch.cat([self.preprocess(img.unsqueeze(0)) for img in images], dim=0)
        return torch.softmax(self.net(batch), dim=1)


def wrap(model: BreedClassifier) -> ExportedClassifier:
    """Eager ExportedClassifier around a (CPU, fp32, eval) copy of ``model``'s backbone + head."""
    net = nn.Sequential(model.backbone, nn.Flatten(1), model.head).float().cpu().eval()
    return ExportedClassifier(net, model.preprocess, model.class_names).eval()


def to_torchscript(model: BreedClassifier) -> torch.jit.ScriptModule:
    """Trace the network at the crop size (robust for every torchvision backbone), script the wrapper."""
    eager = wrap(model)
    example = torch.randn(1, 3, eager.crop_size, eager.crop_size)  # the batch size stays dynamic
    with torch.no_grad():
        traced = torch.jit.trace(eager.net, example, check_trace=False)
    return torch.jit.script(ExportedClassifier(traced, model.preprocess, model.class_names).eval())


def metadata(model: BreedClassifier) -> dict:
    hp = model.hparams
    return {
        "format": "dogbreed-torchscript-v1",
        "input": "uint8 RGB tensor (N, 3, H, W), any H and W",
        "output": "probabilities (N, num_classes), softmax",
        "class_names": model.class_names,
        "backbone": hp.backbone,
        "weights": hp.weights,
        "preprocess": model.preprocess.to_dict(),
    }


def check_export(
    model: BreedClassifier,
    scripted: torch.jit.ScriptModule,
    seed: int = 0,
    atol: float = 1e-2,
    pixel_atol: float = 1e-3,
) -> float:
    """Compare the scripted file against the checkpoint model fed by the evaluation transform.

    Preprocessing is compared on four sizes (larger, equal and smaller than the resize); the network, the
    costly part, on one of them (two forward passes instead of eight: seconds for ResNet-50 on a small CPU).
    Returns the largest probability difference; raises if it exceeds ``atol`` or a pixel ``pixel_atol``.
    """
    rng = np.random.default_rng(seed)
    sizes = ((300, 260), (240, 320), (256, 256), (64, 64))
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    transform = eval_transform(model.preprocess)
    expected_inputs = [transform(Image.fromarray(a)).unsqueeze(0) for a in images]
    uint8 = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in images]
    with torch.no_grad():
        pixels = max(
            float((scripted.preprocess(img.unsqueeze(0)) - want).abs().max())
            for img, want in zip(uint8, expected_inputs, strict=True)
        )
        eager_net = nn.Sequential(model.backbone, nn.Flatten(1), model.head).float().cpu().eval()
        expected = torch.softmax(eager_net(expected_inputs[0]), dim=1)
        got = scripted.predict_images(uint8[:1])
    diff = float((expected - got).abs().max())
    if diff > atol or pixels > pixel_atol:
        raise RuntimeError(
            f"Export check failed: TorchScript and checkpoint disagree by {diff:.4g} in probability "
            f"(> {atol}) or {pixels:.4g} in preprocessed pixels (> {pixel_atol})"
        )
    return diff


def export_torchscript(model: BreedClassifier, path: str | Path) -> Path:
    """Write ``path`` (TorchScript, atomically) and verify it against ``model``."""
    path = Path(path)
    model = model.cpu().float().eval()
    scripted = to_torchscript(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={META_FILE: json.dumps(metadata(model))})
    write_bytes(path, buffer.getvalue())
    diff = check_export(model, torch.jit.load(str(path)))
    log.info("Exported %s (max |Δp| vs checkpoint = %.2g)", path, diff)
    return path


def handler_source(module: str) -> Path:
    """Source file of the SageMaker handler module (default ``serve.inference``),
    found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(
            f"export.handler_module={module!r} is not importable; it becomes code/inference.py"
        )
    return Path(spec.origin)


def package(
    model_pt: str | Path, out: str | Path, handler: str | Path, requirements: list[str] | None = None
) -> Path:
    """Write SageMaker's ``model.tar.gz``: ``model.pt`` + ``code/inference.py``
    (+ ``code/requirements.txt``)."""
    out = Path(out)
    buffer = io.BytesIO()
    # Weights barely compress (level 1 saved 7% on ResNet-50 for 3 s here): store them, still valid gzip.
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=0) as tar:
        tar.add(str(model_pt), arcname="model.pt")
        tar.add(str(handler), arcname="code/inference.py")
        if requirements:
            data = ("\n".join(requirements) + "\n").encode()
            info = tarfile.TarInfo("code/requirements.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_bytes(out, buffer.getvalue())
    return out


def export_all(
    model: BreedClassifier, model_dir: str | Path, handler_module: str = "serve.inference"
) -> dict[str, Path]:
    """``model_dir/model.pt`` and ``model_dir/model.tar.gz``; returns both paths."""
    model_dir = Path(model_dir)
    pt = export_torchscript(model, model_dir / "model.pt")
    tar = package(pt, model_dir / "model.tar.gz", handler_source(handler_module))
    return {"model_pt": pt, "model_tar": tar}
