"""Feature cache: reused across runs, invalidated by content/transform/backbone, atomic, augmented views."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from dogbreed.backbones import preprocess_for
from dogbreed.data.feature_cache import FeatureCache, cache_key
from dogbreed.data.transforms import eval_transform, train_transform
from dogbreed.perf import FeatureExtractor


class Counting:
    """A tiny deterministic 'backbone' (global average of each channel) that counts images it sees."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return x.mean(dim=(2, 3))


@pytest.fixture
def images(synthetic_root, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(synthetic_root / "valid", root)
    return sorted(str(p) for p in root.rglob("*.jpg"))


PRE = preprocess_for("mobilenet_v2", "IMAGENET1K_V1")
AUG = {"random_resized_crop": True, "scale_min": 0.5, "hflip": True}


def compute(cache: FeatureCache, paths, extractor, views=1):
    return cache.features(
        "valid",
        paths,
        views,
        extractor,
        eval_transform(PRE),
        train_transform(PRE, AUG),
        PRE.resize_size,
        batch_size=8,
    )


def test_second_run_reuses_everything(images, tmp_path):
    parts = {"backbone": "x", "preprocess": PRE.to_dict()}
    first, second = Counting(), Counting()
    a = compute(FeatureCache(tmp_path / "c", parts), images, first)
    b = compute(FeatureCache(tmp_path / "c", parts), images, second)
    assert first.seen == len(images) and second.seen == 0
    assert torch.equal(a, b) and a.shape == (len(images), 1, 3) and a.dtype == torch.float16


def test_changed_image_is_recomputed_alone(images, tmp_path):
    parts = {"backbone": "x"}
    compute(FeatureCache(tmp_path / "c", parts), images, Counting())
    Image.new("RGB", (64, 64), (255, 0, 0)).save(images[0])
    again = Counting()
    feats = compute(FeatureCache(tmp_path / "c", parts), images, again)
    assert again.seen == 1
    assert float(feats[0, 0, 0]) > float(feats[0, 0, 1])  # the red image's red channel dominates


def test_transform_or_backbone_change_the_key():
    base = {"backbone": "resnet50", "weights": "IMAGENET1K_V2", "preprocess": PRE.to_dict()}
    other_pre = {**base, "preprocess": preprocess_for("resnet50", "IMAGENET1K_V2").to_dict()}
    assert (
        len(
            {
                cache_key(base),
                cache_key({**base, "backbone": "resnet18"}),
                cache_key(other_pre),
                cache_key({**base, "weights": None}),
            }
        )
        == 4
    )
    assert cache_key(dict(reversed(list(base.items())))) == cache_key(base)


def test_killed_write_leaves_no_half_file(images, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "c", {"backbone": "x"})

    def crash(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        compute(cache, images, Counting())
    assert not (cache.dir / "valid.pt").exists()
    assert not list(cache.dir.glob("*.tmp"))
    monkeypatch.undo()
    counting = Counting()
    compute(FeatureCache(tmp_path / "c", {"backbone": "x"}), images, counting)
    assert counting.seen == len(images)


def test_unreadable_cache_is_recomputed_not_trusted(images, tmp_path):
    cache = FeatureCache(tmp_path / "c", {"backbone": "x"})
    compute(cache, images, Counting())
    (cache.dir / "valid.pt").write_bytes(b"garbage")
    counting = Counting()
    compute(cache, images, counting)
    assert counting.seen == len(images)


def test_augmented_views_are_distinct_and_reproducible(images, tmp_path):
    feats = compute(FeatureCache(tmp_path / "a", {"k": 1}), images[:4], Counting(), views=3)
    again = compute(FeatureCache(tmp_path / "b", {"k": 1}), images[:4], Counting(), views=3)
    plain = compute(FeatureCache(tmp_path / "c", {"k": 1}), images[:4], Counting(), views=1)
    assert feats.shape == (4, 3, 3)
    assert torch.equal(feats, again)  # seeded per image and view
    assert torch.equal(feats[:, 0], plain[:, 0])  # view 0 = the evaluation crop
    assert not torch.equal(feats[:, 1], feats[:, 2])


def test_fast_extractor_matches_fp32_features(monkeypatch):
    from torchvision import models

    from dogbreed import perf

    # The bf16 path (bf16 weights, channels_last, jit.freeze) runs on any CPU, natively or emulated:
    # check it here too, not only on machines with AVX512-BF16/AMX (the first blocks keep it quick there).
    monkeypatch.setattr(perf, "cpu_supports_bf16", lambda: True)
    torch.manual_seed(0)
    net = models.mobilenet_v2(weights=None).features[:7].eval()
    x = torch.randn(4, 3, 64, 64)
    extractor = FeatureExtractor(net, fast=True)
    assert extractor.dtype == torch.bfloat16 and "jit.freeze" in extractor.describe()
    fast = extractor(x)
    slow = FeatureExtractor(net, fast=False)(x)
    assert fast.dtype == slow.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(fast.flatten(1), slow.flatten(1))
    assert float(cos.min()) > 0.98


def test_training_uses_cached_features_only_when_frozen(cfg_factory, tmp_path, monkeypatch):
    from dogbreed.train import build

    monkeypatch.setenv("DOGBREED_CACHE_DIR", str(tmp_path / "cache"))
    frozen = build(cfg_factory(["data.cache.enabled=true"]))["datamodule"]
    frozen.setup("fit")
    x, _ = next(iter(frozen.train_dataloader()))
    assert frozen.uses_feature_cache and x.ndim == 2 and x.shape[1] == 1280
    assert list((tmp_path / "cache").glob("*/train.pt"))
    for overrides in (["data.cache.enabled=false"], ["data.cache.enabled=true", "model.freeze=full"]):
        dm = build(cfg_factory(overrides))["datamodule"]
        dm.setup("fit")
        x, _ = next(iter(dm.train_dataloader()))
        assert not dm.uses_feature_cache and x.ndim == 4


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_cpu_follows_bf16_support(monkeypatch, bf16, expected):
    from dogbreed import perf

    monkeypatch.setattr(perf, "cpu_supports_bf16", lambda: bf16)
    assert perf.auto_precision("cpu") == expected
