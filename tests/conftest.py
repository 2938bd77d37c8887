"""Shared fixtures: tiny generated datasets, composed configs, a trained demo-like model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

# Keep each test process to the machine's two cores and quiet.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session", autouse=True)
def _feature_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the feature cache out of the user's home (and shared across this session's runs)."""
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["DOGBREED_CACHE_DIR"] = str(path)
    return path


TINY_SPEC = {
    "num_classes": 4,
    "train_per_class": 12,
    "valid_per_class": 4,
    "test_per_class": 4,
    "image_size": 64,
    "seed": 0,
    "lookalikes": False,  # four different families: learnable in a few epochs (the demo keeps the pairs)
}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated ImageFolder dataset (4 classes, 64×64 JPEGs), shared by the session. Do not modify it:
    copy it (``shutil.copytree``) before damaging it."""
    from dogbreed.data.synthetic import SyntheticSpec, generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", SyntheticSpec(**TINY_SPEC))


def make_cfg(output_dir: Path, data_root: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose the training config for a tiny CPU run on ``data_root`` writing to ``output_dir``."""
    from dogbreed.config import compose

    base = [
        f"data.root={data_root}",
        "data.num_workers=0",
        "data.batch_size=16",
        "model=mobilenet_v2",
        "model.allow_random_init=true",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0",
        f"paths.output_dir={output_dir}",
    ]
    return compose("train", base + list(overrides or []))


@pytest.fixture(scope="session")
def run_cfg() -> Callable[..., DictConfig]:
    """``make_cfg`` for module- and session-scoped fixtures (``from conftest import`` is ambiguous here:
    tests/toolkit has its own conftest)."""
    return make_cfg


@pytest.fixture
def cfg_factory(tmp_path: Path, synthetic_root: Path) -> Callable[..., DictConfig]:
    """``cfg_factory(["model.lr=0.1", …])`` → a composed config for a tiny run in ``tmp_path/run``."""

    def factory(
        overrides: list[str] | None = None, output_dir: Path | None = None, data_root: Path | None = None
    ) -> DictConfig:
        return make_cfg(output_dir or tmp_path / "run", data_root or synthetic_root, overrides)

    return factory


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """Train once per session (MobileNetV2, frozen, 3 epochs) and export; returns train()'s metrics.

    ``trained_run["output_dir"]`` holds model/model.pt, model/model.tar.gz, checkpoints/, metrics.json.
    """
    from dogbreed.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = make_cfg(out, synthetic_root, ["trainer.max_epochs=3", "model.lr=0.05", "logger=none"])
    metrics, _ = train(cfg)
    return metrics


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The GPU lane: ``@pytest.mark.gpu`` tests run where torch sees a CUDA device and are skipped, with the
    reason, everywhere else (``make test-gpu`` runs only them)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False here): make test-gpu"
    )
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """moto in-process for the launch tests (see tests/aws.py)."""
    from aws import mocked_aws

    with mocked_aws(monkeypatch) as state:
        yield state
