"""DDP without GPUs: ``trainer=ddp`` on two CPU processes (gloo), launched by Lightning from the CLI as a
user's multi-GPU run is, so the distributed code paths (sharded data, rank-zero outputs, the Debugger's
cross-rank stop decision) run on any machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow  # two processes each import torch and build the model: about a minute on 2 cores
def test_ddp_on_two_cpu_processes_shards_the_data_and_writes_one_run(synthetic_root, tmp_path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "dogbreed.train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",  # Lightning's SyncBatchNorm needs CUDA
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        f"data.root={synthetic_root}",
        "data.num_workers=0",
        "data.batch_size=8",
        "model=mobilenet_v2",
        "model.allow_random_init=true",
        "logger=none",
        f"paths.output_dir={out}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Lightning's warnings must show
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in run.stdout + run.stderr
    # Every epoch-level value is reduced across the ranks (Lightning warns about any that is not).
    assert "sync_dist=True" not in run.stdout + run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # 48 training images, batches of 8: 6 batches an epoch, of which each of the two ranks takes 3.
    assert metrics["epochs"] == 2 and metrics["global_step"] == 2 * 3
    # Rank zero alone writes the run's outputs and its final key=value lines.
    assert [line for line in run.stdout.splitlines() if line.startswith("test_acc=")] == [
        f"test_acc={metrics['test_acc']:.6g}"
    ]
    assert (out / "model" / "model.pt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    debugger = json.loads((out / "reports" / "debugger.json").read_text())
    assert debugger["last_step"] == metrics["global_step"] and debugger["stopped"] is None
