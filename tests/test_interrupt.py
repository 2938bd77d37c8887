"""Interrupted runs: a real training process, a real signal, a checkpoint of the interrupted step, the
printed resume command, exit 143/130, and a resumed run that continues at that step (reports included)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from dogbreed.callbacks.interrupt import parse_every
from dogbreed.callbacks.state import pack, unpack
from dogbreed.data.resumable import EpochSampler, ResumableDataLoader
from dogbreed.debug.stats import Columns, History, StepRecord
from dogbreed.train import train

TESTS = Path(__file__).parent
STEPS_PER_EPOCH = 6  # 4 classes × 12 training images, batch 8


def tiny_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.root={data_root}",
        "data.num_workers=0",
        "data.batch_size=8",
        "model=mobilenet_v2",
        "model.allow_random_init=true",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "evaluate.enabled=false",
        "export.enabled=false",
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        f"paths.output_dir={out}",
        *extra,
    ]


def child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    return env


def interrupt_at(args: list[str], marker: str, signum: int, cwd: Path) -> tuple[int, str]:
    """Run ``python -m dogbreed.train ARGS``, send ``signum`` once ``marker`` is printed; (status, output)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dogbreed.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=cwd,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signum)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + rest


def steps_printed(output: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"slow_steps: epoch=\d+ step=(\d+)", output)]


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_sigterm_mid_epoch_saves_the_step_and_the_resumed_run_continues_there(synthetic_root, tmp_path):
    out = tmp_path / "run"
    status, output = interrupt_at(
        tiny_args(synthetic_root, out), "slow_steps: epoch=0 step=3", signal.SIGTERM, tmp_path
    )
    assert status == 143, output
    lines = [line for line in output.splitlines() if line.startswith("Interrupted by SIGTERM")]
    assert len(lines) == 1, output
    stopped = int(re.search(r"at epoch 0, step (\d+); resume with: ", lines[0]).group(1))
    assert 3 <= stopped < STEPS_PER_EPOCH  # mid-epoch: the step that was running when the signal came
    ckpt = out / "checkpoints" / "last.ckpt"
    assert lines[0].endswith(f"paths.output_dir={out} ckpt_path={ckpt}")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == stopped
    assert not (out / "metrics.json").exists()  # an interrupted run reports no final metrics

    assert lines[0].split("resume with: ", 1)[1].startswith("python -m dogbreed.train ")
    resumed = run_resume_command(lines[0], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # It trains the rest of epoch 0 (not its start) and then epoch 1: each step exactly once overall.
    assert steps_printed(resumed.stdout) == list(range(stopped + 1, 2 * STEPS_PER_EPOCH + 1))
    assert "not resumable" not in resumed.stdout + resumed.stderr
    assert "exists and is not empty" not in resumed.stderr  # resuming into the run's own folder is normal
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * STEPS_PER_EPOCH and metrics["epochs"] == 2
    # The reports cover the whole run, both processes.
    profiler = json.loads((out / "reports" / "profiler.json").read_text())
    assert profiler["steps"]["step"] == list(range(2 * STEPS_PER_EPOCH))
    debugger = json.loads((out / "reports" / "debugger.json").read_text())
    assert debugger["last_step"] == 2 * STEPS_PER_EPOCH
    assert debugger["series"]["train_loss"][0][0] == 0  # the first process's loss points are there


def test_sigint_saves_a_checkpoint_and_exits_130(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(synthetic_root, out, "test=false")
    status, output = interrupt_at(args, "slow_steps: epoch=0 step=2", signal.SIGINT, tmp_path)
    assert status == 130, output
    assert re.search(r"^Interrupted by SIGINT at epoch 0, step \d+; resume with: ", output, re.M), output
    assert "Traceback" not in output
    assert (out / "checkpoints" / "last.ckpt").is_file()


class _SeenCheckpoint(pl.Callback):
    """At each batch start: the global step and whether last.ckpt exists yet."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.seen.append((trainer.global_step, self.path.is_file()))


def test_interval_checkpoint_writes_last_ckpt_every_n_steps(cfg_factory, tmp_path):
    cfg = cfg_factory(
        [
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "test=false",
            "export.enabled=false",
            "logger=none",
            "callbacks.model_checkpoint.save_last=false",
            "callbacks.interval_checkpoint.every=4",
        ]
    )
    spy = _SeenCheckpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    train(cfg, extra_callbacks=[spy])
    assert spy.seen == [(step, step >= 4) for step in range(STEPS_PER_EPOCH)]


def test_interval_setting_reads_steps_and_durations_and_names_the_key():
    assert parse_every(None) is None
    assert parse_every(500) == 500 and parse_every("500") == 500
    assert parse_every("30s") == timedelta(seconds=30)
    assert parse_every("10min") == parse_every("10m") == timedelta(minutes=10)
    assert parse_every("1.5h") == timedelta(minutes=90)
    for bad in ("soon", "0", "-5min", "10 days"):
        with pytest.raises(ValueError, match=r"callbacks\.interval_checkpoint\.every="):
            parse_every(bad)


def test_resumable_loader_continues_the_same_epoch_order_after_a_restore():
    data = torch.arange(20)
    first = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(20, seed=7))
    first.sampler.set_epoch(1)
    batches = iter(first)
    seen = [next(batches) for _ in range(3)]
    state = first.state_dict()
    assert {k: state[k] for k in ("epoch", "batches")} == {"epoch": 1, "batches": 3}
    rest = list(batches)

    again = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(20, seed=7))
    again.load_state_dict(state)
    again.sampler.set_epoch(1)  # Lightning calls it before the resumed epoch
    assert [b.tolist() for b in again] == [b.tolist() for b in rest]
    assert sorted(torch.cat([*seen, *rest]).tolist()) == list(range(20))  # each sample once per epoch
    assert {k: again.state_dict()[k] for k in ("epoch", "batches")} == {"epoch": 1, "batches": 7}
    # An end-of-epoch state resumes with the next epoch, in full; a different epoch forgets the skip.
    done = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(20, seed=7))
    done.load_state_dict({"epoch": 1, "batches": 7})
    assert done.sampler.epoch == 2 and len(list(done)) == 7
    other = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(20, seed=7))
    other.load_state_dict({"epoch": 1, "batches": 3})
    other.sampler.set_epoch(2)
    assert len(list(other)) == 7


def test_a_resumed_epoch_draws_the_random_numbers_the_uninterrupted_one_drew():
    """Dropout and main-process augmentation after a resume see the stream an uninterrupted run saw."""

    def epoch(loader: ResumableDataLoader, stop: int | None = None) -> tuple[list, dict]:
        draws, state = [], {}
        for i, _ in enumerate(loader):
            draws.append(torch.rand(2))  # what the step draws (dropout)
            if i == stop:
                state = loader.state_dict()  # what a checkpoint saved after this step holds
                break
        return draws, state

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(torch.arange(20), batch_size=4, sampler=EpochSampler(20, seed=7))

    torch.manual_seed(0)
    plain, _ = epoch(loader())
    torch.manual_seed(0)
    before, state = epoch(loader(), stop=1)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    torch.manual_seed(123)  # the resumed process starts from its own seed
    resumed = loader()
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    after, _ = epoch(resumed)
    assert (len(plain), len(before), len(after)) == (5, 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(plain, before + after, strict=True))


def test_callback_state_survives_a_weights_only_checkpoint(tmp_path):
    history = History(
        train_loss=[(0, 2.5), (10, 1.0)],
        records=[
            StepRecord(
                3,
                gradients=Columns.from_rows({"a.weight": (1.0, 0.5, 0.0)}),
                relu_activity={"r_relu_output": torch.rand(4).numpy()},
                loss=1.25,
            )
        ],
        layers=["a.weight"],
        has_validation=True,
    )
    torch.save({"history": pack(history)}, tmp_path / "state.ckpt")
    loaded = torch.load(tmp_path / "state.ckpt", weights_only=True)
    back = unpack(loaded["history"], History)
    assert back.train_loss == history.train_loss and back.layers == history.layers
    record = back.records[0]
    assert record.step == 3 and record.loss == 1.25 and record.gradients.names == ("a.weight",)
    assert (record.gradients["norm"] == history.records[0].gradients["norm"]).all()
    assert (record.relu_activity["r_relu_output"] == history.records[0].relu_activity["r_relu_output"]).all()


def run_resume_command(
    line: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = shlex.split(line.split("resume with: ", 1)[1])
    return subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        env=env or child_env(),
        cwd=cwd,
        timeout=900,
    )


@pytest.mark.slow
def test_demo_stopped_by_sigterm_mid_epoch_resumes_to_the_same_test_accuracy(tmp_path):
    """The acceptance run: ``kill -TERM`` on the demo mid-epoch → 143 + resume command → same test_acc."""
    base = [
        "experiment=demo",
        f"data.root={tmp_path / 'synthetic'}",
        "evaluate.enabled=false",
        "export.enabled=false",
        "+callbacks.slow._target_=slow_steps.SlowSteps",  # 0.3 s per step: time to land mid-epoch
    ]
    plain = subprocess.run(
        [sys.executable, "-m", "dogbreed.train", *base, f"paths.output_dir={tmp_path / 'plain'}"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        timeout=900,
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    out = tmp_path / "stopped"
    status, output = interrupt_at(
        [*base, f"paths.output_dir={out}"], "slow_steps: epoch=1 step=18", signal.SIGTERM, tmp_path
    )
    assert status == 143, output
    line = next(x for x in output.splitlines() if x.startswith("Interrupted by SIGTERM at epoch 1, step"))
    resumed = run_resume_command(line, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got["global_step"] == expected["global_step"]
    assert abs(got["test_acc"] - expected["test_acc"]) <= 0.02, (got["test_acc"], expected["test_acc"])
    # More than the acceptance asks: the resumed epoch replays the random state (dropout), so the resumed
    # run is the uninterrupted one, to rounding.
    for key in ("test_acc", "test_loss", "val_loss", "best_epoch", "epochs"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key


@pytest.mark.slow
def test_spot_interruption_inside_a_sagemaker_job_writes_the_failure_file_and_the_restart_resumes(
    synthetic_root, tmp_path
):
    opt_ml = tmp_path / "opt_ml"
    channels = opt_ml / "input" / "data"
    channels.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (channels / split).symlink_to(synthetic_root / split, target_is_directory=True)
    for folder in ("checkpoints", "output/data", "model"):
        (opt_ml / folder).mkdir(parents=True, exist_ok=True)
    env = {
        **child_env(),
        **{f"SM_CHANNEL_{s.upper()}": str(channels / s) for s in ("train", "valid", "test")},
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_OUTPUT_DIR": str(opt_ml / "output"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "TRAINING_JOB_NAME": "dogbreed-spot-1",
        "DOGBREED_CHECKPOINT_DIR": str(opt_ml / "checkpoints"),
    }
    hyperparameters = [
        "--data.batch_size", "8", "--data.num_workers", "0", "--model", '"mobilenet_v2"',
        "--model.allow_random_init", "true", "--trainer.max_epochs", "2", "--logger", '"none"',
        "+callbacks.slow._target_=slow_steps.SlowSteps",
    ]  # fmt: skip
    job = [sys.executable, "-m", "launch.shim", *hyperparameters]
    proc = subprocess.Popen(
        job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "slow_steps: epoch=0 step=3" in line:
            proc.send_signal(signal.SIGTERM)  # what SageMaker sends when it reclaims a spot instance
            break
    output = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 143, output
    assert "callbacks.interval_checkpoint.every=10min" in output  # on by default inside a job
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.startswith("Interrupted by SIGTERM at epoch 0, step ") and "ckpt_path=" in reason
    stopped = torch.load(opt_ml / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]

    (opt_ml / "output" / "failure").unlink()
    restarted = subprocess.run(job, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert f"ckpt_path={opt_ml / 'checkpoints' / 'last.ckpt'}" in restarted.stdout
    assert steps_printed(restarted.stdout)[0] == stopped + 1
    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * STEPS_PER_EPOCH
    assert (opt_ml / "model" / "model.pt").is_file() and not (opt_ml / "output" / "failure").exists()
