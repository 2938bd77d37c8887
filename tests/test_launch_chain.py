"""The in-job half of the SageMaker story: the shim trains as inside a job (``launch.shim.main`` on generated
data, SageMaker's environment variables, ``--key value`` hyperparameters), fills the model dir, and prints
the lines the metric definitions scrape. The AWS half (train → tune → deploy → invoke → delete on moto) is
tests/test_launch_moto.py, which runs under both SDKs.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from dogbreed.callbacks.metric_lines import EPOCH_KEYS
from launch import shim
from launch.job import metric_definitions

JOB = "dogbreed-chain-1"
HYPERPARAMETERS = [  # what the SageMaker toolkit passes on the command line
    "--model", "mobilenet_v2", "--model.allow_random_init", "true", "--model.lr", "0.05",
    "--model.optimizer", '"sgd"', "--data.num_workers", "0", "--data.batch_size", "16",
    "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0", "--logger", "none",
    "--++callbacks.debugger", "null", "--++callbacks.profiler", "null", "--++evaluate.enabled", "false",
    "--_tuning_objective_metric", "val_acc", "--sagemaker_program", "sagemaker_entry.py",
]  # fmt: skip


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """Run the shim in a fake /opt/ml: channels (one folder per split), model, output and checkpoint dirs."""
    opt_ml = tmp_path_factory.mktemp("opt_ml")
    channels = opt_ml / "input" / "data"
    channels.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (channels / split).symlink_to(synthetic_root / split, target_is_directory=True)
    (opt_ml / "checkpoints").mkdir()
    env = {
        **{f"SM_CHANNEL_{s.upper()}": str(channels / s) for s in ("train", "valid", "test")},
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "TRAINING_JOB_NAME": JOB,
        "DOGBREED_CHECKPOINT_DIR": str(opt_ml / "checkpoints"),
        "DOGBREED_FAILURE_FILE": str(opt_ml / "output" / "failure"),
    }
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("HYDRA_FULL_ERROR", "0")  # restored afterwards (the shim sets it)
        with redirect_stdout(stdout):
            assert shim.main(HYPERPARAMETERS) == 0
    yield {"opt_ml": opt_ml, "env": env, "stdout": stdout.getvalue()}


def test_shim_trains_and_fills_the_model_dir(job: dict) -> None:
    opt_ml = job["opt_ml"]
    assert sorted(
        p.relative_to(opt_ml / "model").as_posix() for p in (opt_ml / "model").rglob("*") if p.is_file()
    ) == [
        "code/inference.py",
        "model.pt",
    ]
    output = opt_ml / "output" / "data"
    config = (output / ".hydra" / "config.yaml").read_text()
    assert "lr: 0.05" in config and f"root: {opt_ml / 'input' / 'data'}" in config
    assert json.loads((output / "metrics.json").read_text())["epochs"] == 1
    assert (opt_ml / "checkpoints" / "last.ckpt").is_file()
    assert (opt_ml / "checkpoints" / "dogbreed-job.txt").read_text() == JOB
    # A restarted (spot-interrupted) job of the same name resumes from that checkpoint.
    plan = shim.translate(HYPERPARAMETERS, job["env"])
    assert f"ckpt_path={opt_ml / 'checkpoints' / 'last.ckpt'}" in plan.overrides


def test_metric_regexes_match_the_lines_training_printed(job: dict) -> None:
    lines = job["stdout"].splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert len(epoch_lines) == 1
    metrics = json.loads((job["opt_ml"] / "output" / "data" / "metrics.json").read_text())
    for definition in metric_definitions():
        found = [float(m.group(1)) for line in lines if (m := re.search(definition["Regex"], line))]
        name = definition["Name"]
        if name in EPOCH_KEYS:
            printed = [float(re.search(rf"\b{name}=(\S+)", line).group(1)) for line in epoch_lines]
            assert found[: len(printed)] == printed, name
        if metrics.get(name) is not None:  # the last match is the final key=value line
            assert found[-1] == pytest.approx(metrics[name], rel=1e-5), name
    test_acc = next(d["Regex"] for d in metric_definitions() if d["Name"] == "test_acc")
    assert sum(bool(re.search(test_acc, line)) for line in lines) == 1  # not fooled by test_acc_top5=


def test_a_failing_job_writes_sagemakers_failure_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOGBREED_FAILURE_FILE", str(tmp_path / "failure"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        shim.main(["--data.batch_size", "0", f"paths.output_dir={out}"])
    assert exited.value.code != 0
    assert "data.batch_size=0 must be >= 1" in (tmp_path / "failure").read_text()
