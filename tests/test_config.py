"""Every config group option composes and instantiates; bad values fail early, naming the key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from dogbreed.config import CONFIG_DIR, ConfigError, compose, validate
from dogbreed.data import ImageFolderDataModule
from dogbreed.model import BreedClassifier
from dogbreed.perf import auto_precision

REPO = Path(__file__).resolve().parents[1]


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


def needs_gpu(name: str) -> bool:
    return OmegaConf.load(CONFIG_DIR / "trainer" / f"{name}.yaml").get("accelerator") == "gpu"


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.gpu) if needs_gpu(n) else n for n in options("trainer")]
)
def test_every_trainer_option_instantiates(name, tmp_path):
    cfg = compose("train", [f"trainer={name}", f"paths.output_dir={tmp_path}"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert str(trainer.precision) == cfg.trainer.precision


def test_precision_auto_is_resolved_in_the_config(tmp_path):
    # What `--cfg job --resolve`, the run page and the Trainer see: the probe's answer, not "auto".
    for accelerator in ("auto", "cpu"):
        cfg = compose("train", [f"trainer.accelerator={accelerator}", f"paths.output_dir={tmp_path}"])
        assert cfg.trainer.precision == auto_precision(accelerator)
        assert f"precision: {auto_precision(accelerator)}" in OmegaConf.to_yaml(cfg.trainer, resolve=True)
    assert compose("train", ["trainer.precision=16-mixed"]).trainer.precision == "16-mixed"


def test_callbacks_are_the_composed_ones():
    default = compose("train").callbacks
    assert {"model_checkpoint", "early_stopping", "lr_monitor", "metric_lines", "progress_bar"} <= set(
        default
    )
    assert not compose("train", ["callbacks=none"]).callbacks
    off = compose("train", ["callbacks.debugger=null"]).callbacks
    assert off.debugger is None and set(off) == set(default)


def test_logger_none_switches_off_the_lr_monitor_and_validation_names_it(tmp_path):
    cfg = compose("train", ["logger=none", f"paths.output_dir={tmp_path}"])
    assert cfg.callbacks.lr_monitor is None and not cfg.logger
    validate(cfg)
    cfg.callbacks.lr_monitor = {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor"}
    with pytest.raises(ConfigError, match=r"callbacks\.lr_monitor .*needs a logger"):
        validate(cfg)


def test_one_objective_key_for_training_and_tuning():
    assert compose("launch_tune", ["objective=val_loss"]).tune.objective == "val_loss"
    # The old spelling still reaches the trials, as their `objective`.
    cfg = compose("launch_tune", ["tune.objective=val_loss"])
    assert "objective=val_loss" in list(cfg.tune.trial_overrides)


@pytest.mark.parametrize("group", ["experiment", "debug", "logger", "callbacks"])
def test_other_groups_compose(group, tmp_path):
    base = OmegaConf.to_container(compose("train", [f"paths.output_dir={tmp_path}"]))
    for name in options(group):
        cfg = compose("train", [f"{group}={name}", f"paths.output_dir={tmp_path}"])
        validate(cfg)
        # An option that changes nothing (e.g. an empty debug/broken.yaml, which only adds `debug: null`)
        # is a broken option.
        got = OmegaConf.to_container(cfg)
        changed = {
            k
            for k in base.keys() | got.keys()
            if got.get(k) != base.get(k) and (k in base or got[k] not in (None, {}))
        }
        assert changed or name == "default", f"{group}={name} changes nothing in the composed config"


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


@pytest.mark.parametrize(
    ("override", "build"),
    [
        ("data.batch_size=0", lambda root: ImageFolderDataModule(root, batch_size=0)),
        ("data.num_workers=-1", lambda root: ImageFolderDataModule(root, num_workers=-1)),
        ("model.lr=-0.1", lambda root: BreedClassifier(["a", "b"], "mobilenet_v2", weights=None, lr=-0.1)),
    ],
)
def test_building_from_python_applies_the_rule_validate_applies(override, build, synthetic_root, tmp_path):
    """One rule, one message: the config check and the constructor say the same thing."""
    cfg = compose("train", [override, f"data.root={synthetic_root}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as from_config:
        validate(cfg)
    with pytest.raises(ConfigError) as from_python:
        build(synthetic_root)
    assert str(from_python.value) == str(from_config.value)


def test_config_dir_is_inside_the_installed_package_layout(tmp_path):
    # In a checkout CONFIG_DIR is <repo>/conf; setup.py ships conf/ as the dogbreed.conf package, so an
    # installed wheel composes from its own copy. Build the wheel from a copy of the sources (a build
    # writes build/ beside setup.py) and compose from the unpacked wheel, outside the checkout.
    assert CONFIG_DIR == REPO / "conf" and (CONFIG_DIR / "train.yaml").is_file()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "conf", "dogbreed", "launch", "serve"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    site = tmp_path / "site"
    zipfile.ZipFile(next((tmp_path / "dist").glob("dogbreed-*.whl"))).extractall(site)
    probe = (
        "from dogbreed.config import CONFIG_DIR, compose; print(CONFIG_DIR, compose('train').model.backbone)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(site / "dogbreed" / "conf"), "resnet50"]
