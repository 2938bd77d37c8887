"""Every config group option composes and instantiates; bad values fail early, naming the key."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from dogbreed.config import CONFIG_DIR, ConfigError, compose, validate
from dogbreed.perf import auto_precision


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_config_dir_has_every_group():
    for group in ("data", "model", "trainer", "callbacks", "logger", "paths", "experiment", "debug"):
        assert options(group), group
    assert set(options("model")) >= {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "densenet161",
        "vgg16_bn",
        "mobilenet_v2",
        "efficientnet_b0",
        "convnext_tiny",
    }
    assert set(options("data")) >= {"dogbreed", "synthetic", "folder"}
    assert set(options("trainer")) >= {"default", "cpu", "gpu", "ddp"}
    assert set(options("debug")) >= {"fast_dev_run", "overfit_batches", "limit_batches"}


def test_defaults_match_the_contract():
    cfg = compose("train")
    assert cfg.data.root == "data/dogImages"
    assert cfg.model.backbone == "resnet50" and cfg.model.weights == "IMAGENET1K_V2"
    assert cfg.model.freeze == "frozen"
    assert cfg.model._target_ == "dogbreed.model.BreedClassifier"


@pytest.mark.parametrize("name", options("model"))
def test_every_model_option_instantiates(name):
    cfg = compose("train", [f"model={name}", "model.weights=null"])
    model = hydra.utils.instantiate(cfg.model, class_names=["a", "b", "c"])
    assert hasattr(model, "backbone") and hasattr(model, "head")
    pre = model.preprocess
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, pre.crop_size, pre.crop_size))
    assert out.shape == (1, 3)


@pytest.mark.parametrize("name", options("data"))
def test_every_data_option_instantiates(name, synthetic_root, tmp_path):
    root = tmp_path / "gen" if name == "synthetic" else synthetic_root
    overrides = [f"data={name}", f"data.root={root}", "data.num_workers=0"]
    if name == "synthetic":
        overrides += [
            "data.synthetic.num_classes=3",
            "data.synthetic.train_per_class=2",
            "data.synthetic.valid_per_class=1",
            "data.synthetic.test_per_class=1",
            "data.synthetic.image_size=32",
        ]
    cfg = compose("train", overrides)
    dm = hydra.utils.instantiate(cfg.data, _convert_="partial")
    assert dm.num_classes >= 3
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1] == 3


@pytest.mark.parametrize("name", options("trainer"))
def test_every_trainer_option_instantiates(name, tmp_path):
    cfg = compose("train", [f"trainer={name}", f"paths.output_dir={tmp_path}"])
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU on this machine: the gpu/ddp trainer options need one")
    precision = (
        auto_precision(cfg.trainer.accelerator) if cfg.trainer.precision == "auto" else cfg.trainer.precision
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer, precision=precision, logger=False, enable_progress_bar=False
    )
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["experiment", "debug", "logger", "callbacks"])
def test_other_groups_compose(group, tmp_path):
    for name in options(group):
        cfg = compose("train", [f"{group}={name}", f"paths.output_dir={tmp_path}"])
        validate(cfg)


def test_demo_experiment_selects_mobilenet_and_synthetic_data():
    cfg = compose("train", ["experiment=demo"])
    assert cfg.model.backbone == "mobilenet_v2" and cfg.model.allow_random_init is True
    assert "synthetic" in cfg.data


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.num_workers=-1", "data.num_workers"),
        ("model.lr=-0.1", "model.lr"),
        ("model.freeze=sometimes", "model.freeze"),
        ("trainer.max_epochs=many", "trainer.max_epochs"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
        ("data.root=???", "data.root"),
    ],
)
def test_validation_names_the_key(override, key, tmp_path):
    cfg = compose("train", [override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_config_dir_is_inside_the_installed_package_layout():
    # setup.py ships conf/ as the dogbreed.conf package; in a checkout CONFIG_DIR is <repo>/conf.
    assert (CONFIG_DIR / "train.yaml").is_file()
    assert Path(CONFIG_DIR).name == "conf"
