"""The SageMaker entry shim: hyperparameters and SM_* variables → Hydra overrides,
parsed by a real @hydra.main."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR
from launch.shim import parse_args, translate

CONTAINER = {
    "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    "SM_CHANNEL_VALID": "/opt/ml/input/data/valid",
    "SM_CHANNEL_TEST": "/opt/ml/input/data/test",
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    "SM_NUM_GPUS": "1",
    "SM_HOSTS": '["algo-1"]',
    "SM_CURRENT_HOST": "algo-1",
    "DOGBREED_CHECKPOINT_DIR": "/nonexistent/checkpoints",
}


def test_hyperparameters_become_overrides() -> None:
    argv = [
        "--model.lr", "0.05",
        "--model.optimizer", '"adam"',  # a tuner's categorical: JSON-quoted
        "--data.batch_size=64",
        "--model", '"resnet18"',
        "--data.root", '"/data/with space"',
        "--model.head.type", "'mlp'",  # the user's own Hydra quoting survives
        "--sagemaker_program", "sagemaker_entry.py",
        "--sagemaker_submit_directory", "s3://b/code.tar.gz",
        "--_tuning_objective_metric", "val_acc",
        "trainer.max_epochs=3",
        "--~callbacks.early_stopping", "",
    ]  # fmt: skip
    assert parse_args(argv) == [
        "model.lr=0.05",
        "model.optimizer=adam",
        "data.batch_size=64",
        "model=resnet18",
        "data.root='/data/with space'",
        "model.head.type='mlp'",
        "trainer.max_epochs=3",
        "~callbacks.early_stopping",
    ]


def test_unreadable_argument_is_an_error() -> None:
    with pytest.raises(SystemExit, match="cannot read argument 'stray'"):
        parse_args(["stray"])


def test_container_environment_becomes_overrides() -> None:
    plan = translate(["--model.lr", "0.01", "--data.root", "/mine"], CONTAINER)
    assert plan.overrides == [
        "trainer=gpu",
        "model.lr=0.01",
        "paths.output_dir=/opt/ml/output/data",
        "data.root=/opt/ml/input/data",
        "++data.synthetic=null",
    ]
    assert plan.model_dir == Path("/opt/ml/model") and plan.output_dir == Path("/opt/ml/output/data")
    assert plan.env == {}


def test_multi_host_gpu_job_gets_ddp_and_rendezvous() -> None:
    env = {**CONTAINER, "SM_NUM_GPUS": "4", "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    plan = translate([], env)
    assert plan.overrides[:4] == [
        "trainer=ddp",
        "++trainer.strategy=ddp",
        "++trainer.num_nodes=2",
        "trainer.devices=4",
    ]
    assert plan.env == {"MASTER_ADDR": "algo-1", "MASTER_PORT": "29500", "NODE_RANK": "1"}
    # Under torchrun (torch_distributed) the launcher already set the rendezvous: nothing to add.
    assert translate([], {**env, "WORLD_SIZE": "8"}).env == {}


def test_user_trainer_settings_win_over_derived_ones() -> None:
    env = {**CONTAINER, "SM_NUM_GPUS": "4"}
    plan = translate(["--trainer.devices", "2"], env)
    assert plan.overrides[:4] == [
        "trainer=ddp",
        "++trainer.strategy=ddp",
        "++trainer.num_nodes=1",
        "trainer.devices=2",
    ]
    plan = translate(["--trainer", '"gpu"'], env)  # a trainer config chosen by the user: nothing derived
    assert [o for o in plan.overrides if o.lstrip("+").startswith("trainer")] == ["trainer=gpu"]


def test_cpu_instance_and_hyperparameters_from_sm_hps() -> None:
    env = {**CONTAINER, "SM_NUM_GPUS": "0", "SM_HPS": '{"model.lr": 0.2, "model.optimizer": "adamw"}'}
    plan = translate([], env)
    assert plan.overrides[:3] == ["trainer=cpu", "model.lr=0.2", "model.optimizer=adamw"]


def test_scattered_channels_are_linked_together(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    env = {
        "SM_CHANNEL_TRAIN": str(tmp_path / "a"),
        "SM_CHANNEL_VAL": str(tmp_path / "b"),
        "SM_CHANNEL_TEST": str(tmp_path / "c"),
    }
    plan = translate([], env)
    root = Path(next(o for o in plan.overrides if o.startswith("data.root=")).split("=", 1)[1])
    assert {p.name: p.resolve() for p in root.iterdir()} == {
        "train": tmp_path / "a",
        "valid": tmp_path / "b",
        "test": tmp_path / "c",
    }
    # One channel holding all three splits (how many notebooks upload the dataset) is the root itself.
    assert (
        "data.root=/opt/ml/input/data/training"
        in translate([], {"SM_CHANNEL_TRAINING": "/opt/ml/input/data/training"}).overrides
    )
    with pytest.raises(SystemExit, match="channel\\(s\\) test are missing"):
        translate([], {"SM_CHANNEL_TRAIN": str(tmp_path / "a"), "SM_CHANNEL_VALID": str(tmp_path / "b")})


def test_weights_channel_and_checkpoint_resume(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "resnet50-11ad3fa6.pth").write_bytes(b"x")
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    env = {"SM_CHANNEL_WEIGHTS": str(weights), "DOGBREED_CHECKPOINT_DIR": str(ckpt)}
    assert translate([], env).overrides == [
        "callbacks.interval_checkpoint.every=10min",  # /opt/ml/checkpoints is synced: checkpoint as we go
        f"model.weights_file={weights / 'resnet50-11ad3fa6.pth'}",
        f"paths.checkpoint_dir={ckpt}",
    ]
    # The user's own interval (or none at all) wins.
    for mine in ("callbacks.interval_checkpoint.every=200", "callbacks.interval_checkpoint=null"):
        overrides = translate([mine], env).overrides
        assert mine in overrides and "callbacks.interval_checkpoint.every=10min" not in overrides
    (ckpt / "last.ckpt").write_bytes(b"x")  # a spot interruption left a checkpoint behind: resume from it
    (ckpt / "dogbreed-job.txt").write_text("job-1")
    assert (
        translate([], {**env, "TRAINING_JOB_NAME": "job-1"}).overrides[-1]
        == f"ckpt_path={ckpt / 'last.ckpt'}"
    )
    # Another job sharing the checkpoint prefix (e.g. a tuning job's next trial) starts fresh.
    assert not any(
        o.startswith("ckpt_path=") for o in translate([], {**env, "TRAINING_JOB_NAME": "job-2"}).overrides
    )
    (weights / "other.pt").write_bytes(b"x")
    with pytest.raises(SystemExit, match="exactly one"):
        translate([], env)


def test_translated_overrides_parse_with_the_real_hydra_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overrides go through a real ``@hydra.main`` on dogbreed's train config:
    types and groups come out right."""
    env = {
        **CONTAINER,
        "SM_CHANNEL_TRAIN": str(tmp_path / "in put/train"),  # a space in the path must be quoted
        "SM_CHANNEL_VALID": str(tmp_path / "in put/valid"),
        "SM_CHANNEL_TEST": str(tmp_path / "in put/test"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
        "SM_NUM_GPUS": "4",
        "SM_HOSTS": '["algo-1", "algo-2"]',
    }
    argv = [
        "--model.lr",
        "0.05",
        "--model.optimizer",
        '"adam"',
        "--model",
        '"resnet18"',
        "--experiment",
        '"demo"',
    ]
    plan = translate(argv, env)
    seen: list[DictConfig] = []

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
    def capture(cfg: DictConfig) -> None:
        seen.append(cfg)

    monkeypatch.setattr(sys, "argv", ["dogbreed.train", *plan.overrides])
    capture()
    cfg = seen[0]
    assert cfg.model.lr == 0.05 and isinstance(cfg.model.lr, float)
    assert cfg.model.optimizer == "adam"
    assert cfg.model.backbone == "resnet18"  # the CLI group choice beats experiment=demo's mobilenet_v2
    assert cfg.data.root == str(tmp_path / "in put") and cfg.data.synthetic is None
    assert cfg.paths.output_dir == str(tmp_path / "output")
    assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == (
        "gpu",
        "ddp",
        4,
        2,
    )
    assert (tmp_path / "output" / ".hydra" / "overrides.yaml").is_file()
