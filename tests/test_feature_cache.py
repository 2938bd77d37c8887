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


@pytest.mark.parametrize("num_workers", [0, 1])
def test_computing_features_leaves_the_random_state_as_reading_them_does(images, tmp_path, num_workers):
    """Same seed, same run, whether the cache was cold or warm."""
    cache, counting = FeatureCache(tmp_path / "c", {"k": 1}), Counting()
    draws = []
    for _ in ("cold", "warm"):
        torch.manual_seed(0)
        feats = cache.features(
            "train",
            images[:4],
            2,
            counting,
            eval_transform(PRE),
            train_transform(PRE, AUG),
            PRE.resize_size,
            batch_size=2,
            num_workers=num_workers,
        )
        draws.append((feats, torch.rand(3)))
    assert counting.seen == 4 * 2  # the second pass read the cache
    (cold, after_cold), (warm, after_warm) = draws
    assert torch.equal(cold, warm) and torch.equal(after_cold, after_warm)


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
    from dogbreed.data.cached_mode import CachedFeaturesMode
    from dogbreed.train import build

    monkeypatch.setenv("DOGBREED_CACHE_DIR", str(tmp_path / "cache"))
    objects = build(cfg_factory(["data.cache.enabled=true"]))
    frozen, mode, model = objects["datamodule"], objects["features"], objects["model"]
    assert isinstance(mode, CachedFeaturesMode) and frozen.features is mode
    assert model.batch_inputs == "features" and mode.computed_by(model)
    frozen.setup("fit")
    x, _ = next(iter(frozen.train_dataloader()))
    assert x.ndim == 2 and x.shape[1] == 1280 and frozen.datasets["train"] is mode.datasets["train"]
    assert list((tmp_path / "cache").glob(f"{mode.store.key}/train.pt"))
    for overrides in (["data.cache.enabled=false"], ["data.cache.enabled=true", "model.freeze=full"]):
        objects = build(cfg_factory(overrides))
        dm = objects["datamodule"]
        assert objects["features"] is None and dm.features is None
        assert objects["model"].batch_inputs == "images"
        dm.setup("fit")
        x, _ = next(iter(dm.train_dataloader()))
        assert x.ndim == 4


def test_the_model_takes_features_only_when_the_mode_says_so(cfg_factory, tmp_path, monkeypatch):
    """The step follows ``batch_inputs``, not the batch's shape: a features batch given to a model on
    images fails loudly instead of being guessed."""
    from dogbreed.train import build

    monkeypatch.setenv("DOGBREED_CACHE_DIR", str(tmp_path / "cache"))
    model = build(cfg_factory(["data.cache.enabled=true"]))["model"]
    features, labels = torch.randn(4, model.num_features), torch.tensor([0, 1, 0, 1])
    model.backbone.register_forward_hook(lambda *_: pytest.fail("the backbone ran on cached features"))
    assert torch.isfinite(model.training_step((features, labels), 0))
    model.batch_inputs = "images"
    with pytest.raises(RuntimeError):
        model.training_step((features, labels), 0)


def test_evaluation_reuses_the_features_only_for_the_model_whose_backbone_made_them(
    cfg_factory, tmp_path, monkeypatch
):
    import copy

    from dogbreed.evaluate.inference import cached_predictions
    from dogbreed.train import build

    monkeypatch.setenv("DOGBREED_CACHE_DIR", str(tmp_path / "cache"))
    objects = build(cfg_factory(["data.cache.enabled=true"]))
    datamodule, model, mode = objects["datamodule"], objects["model"], objects["features"]
    preds = cached_predictions(model, datamodule, "test")
    test = mode.datasets["test"]
    assert preds is not None and preds.paths == test.paths and len(preds.paths) == len(test)
    with torch.inference_mode():
        expected = torch.softmax(model.head(test.features[:, 0].float()), dim=1)
    assert torch.equal(preds.probs, expected) and torch.equal(preds.targets, test.targets)
    # Another network (here a copy: equal weights, another backbone object) gets its own forward pass.
    assert cached_predictions(copy.deepcopy(model), datamodule, "test") is None
    on_images = build(cfg_factory(["data.cache.enabled=false"]))
    assert cached_predictions(on_images["model"], on_images["datamodule"], "test") is None


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_cpu_follows_bf16_support(monkeypatch, bf16, expected):
    from dogbreed import perf

    monkeypatch.setattr(perf, "cpu_supports_bf16", lambda: bf16)
    assert perf.auto_precision("cpu") == expected
