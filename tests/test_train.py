"""End to end: fast_dev_run, a short run that learns, the run directory, metric lines, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dogbreed.callbacks.metric_lines import metric_regex
from dogbreed.data import DatasetError
from dogbreed.metric_format import FINAL_KEYS
from dogbreed.train import train


def test_fast_dev_run_wires_everything_without_exporting(cfg_factory, tmp_path):
    cfg = cfg_factory(["debug=fast_dev_run"])
    metrics, objects = train(cfg)
    assert objects["trainer"].fast_dev_run
    # The callbacks are the composed config's, one per non-null entry, in its order (nothing added in code).
    composed = [node._target_.rsplit(".", 1)[1] for node in cfg.callbacks.values() if node is not None]
    assert [type(c).__name__ for c in objects["callbacks"]] == composed
    assert "test_acc" in metrics
    assert not (tmp_path / "run" / "model" / "model.pt").exists()


def test_run_learns_and_writes_the_documented_layout(trained_run):
    out = Path(trained_run["output_dir"])
    # 4 classes → chance is 0.25; the frozen pretrained backbone separates the patterns easily.
    assert trained_run["test_acc"] >= 0.6, trained_run
    assert trained_run["val_acc"] >= 0.6, trained_run
    for rel in (
        ".hydra/config.yaml",
        "checkpoints/last.ckpt",
        "model/model.pt",
        "model/model.tar.gz",
        "metrics.json",
    ):
        assert (out / rel).is_file(), rel
    assert list((out / "checkpoints").glob("best-*.ckpt"))
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("val_loss", "val_acc", "test_loss", "test_acc", "test_acc_top5"):
        assert saved[key] == pytest.approx(trained_run[key])
    assert saved["objective"] == saved["val_acc"]


def test_an_early_stop_says_why_on_the_console(cfg_factory, capsys):
    # min_delta larger than any loss change: val_loss never "improves", so patience 1 stops after epoch 1.
    cfg = cfg_factory(
        [
            "trainer.max_epochs=5",
            "trainer.limit_train_batches=1",
            "export.enabled=false",
            "evaluate.enabled=false",
            "logger=none",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=100",
        ]
    )
    metrics, _ = train(cfg)
    out = capsys.readouterr().out
    assert metrics["epochs"] == 2
    assert re.search(
        r"^Stopped early after epoch 1: val_loss had not improved for 1 epochs \(best [0-9.]+; "
        r"callbacks\.early_stopping\)$",
        out,
        re.MULTILINE,
    ), out


def test_stdout_has_epoch_lines_and_final_key_values(cfg_factory, capsys):
    # The kept checkpoint is the epoch of the *highest* val_loss: not the last one on a run that learns.
    cfg = cfg_factory(
        [
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=1",
            "export.enabled=false",
            "logger=none",
            "callbacks.early_stopping=null",
            "callbacks.model_checkpoint.monitor=val_loss",
            "callbacks.model_checkpoint.mode=max",
        ]
    )
    metrics, _ = train(cfg)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert [int(re.match(r"epoch=(\d+)", line).group(1)) for line in epoch_lines] == [0, 1, 2]
    losses = [float(re.search(metric_regex("val_loss"), line).group(1)) for line in epoch_lines]
    assert metrics["best_epoch"] == losses.index(max(losses)) != 2, losses
    for key in ("train_loss", "val_loss", "val_acc"):
        assert re.search(metric_regex(key), epoch_lines[-1]), (key, epoch_lines[-1])
    tail = lines[-len(FINAL_KEYS) :]
    assert [line.split("=")[0] for line in tail] == list(FINAL_KEYS)
    final = {line.split("=")[0]: line for line in tail}
    assert float(re.search(metric_regex("test_acc"), final["test_acc"]).group(1)) == pytest.approx(
        metrics["test_acc"], abs=1e-5
    )
    # val_* are the best checkpoint's epoch line (the model the test_* lines measured), last_val_* the last.
    assert final["best_epoch"] == f"best_epoch={metrics['best_epoch']}"
    for prefix, line in (("", epoch_lines[metrics["best_epoch"]]), ("last_", epoch_lines[-1])):
        for key in ("val_loss", "val_acc"):
            printed = float(re.search(metric_regex(prefix + key), final[prefix + key]).group(1))
            assert printed == float(re.search(metric_regex(key), line).group(1))
            assert printed == pytest.approx(metrics[prefix + key], rel=1e-5)


def test_resume_from_last_checkpoint_continues_training(cfg_factory, tmp_path, capsys):
    common = [
        "trainer.limit_train_batches=2",
        "export.enabled=false",
        "test=false",
        "logger=none",
        "callbacks.early_stopping=null",
        # Keep the worst-loss epoch (often the first run's): the resumed run must still know which it was.
        "callbacks.model_checkpoint.monitor=val_loss",
        "callbacks.model_checkpoint.mode=max",
    ]
    first, objs = train(cfg_factory(["trainer.max_epochs=1", *common], output_dir=tmp_path / "a"))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert first["global_step"] == 2
    state = torch.load(last, map_location="cpu", weights_only=True)  # what resuming loads it with
    assert state["epoch"] == 0 and state["hyper_parameters"]["class_names"] == objs["datamodule"].class_names
    capsys.readouterr()
    # Resumed in the same output directory, as the interrupt message says (ModelCheckpoint restores its
    # scores only there).
    second, _ = train(
        cfg_factory(["trainer.max_epochs=3", f"ckpt_path={last}", *common], output_dir=tmp_path / "a")
    )
    assert second["global_step"] == 6  # resumed at step 2, then two more epochs of 2 steps
    assert second["epochs"] == 3
    resumed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    losses = [
        first["val_loss"],
        *(float(re.search(metric_regex("val_loss"), line).group(1)) for line in resumed),
    ]
    assert len(losses) == 3 and second["best_epoch"] == losses.index(max(losses))
    assert second["val_loss"] == pytest.approx(losses[second["best_epoch"]], rel=1e-5)
    assert second["last_val_loss"] == pytest.approx(losses[-1], rel=1e-5)


def test_missing_dataset_fails_before_training(cfg_factory, tmp_path):
    cfg = cfg_factory(data_root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="python -m dogbreed.data download"):
        train(cfg)


def test_cli_reports_user_errors_without_a_traceback(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dogbreed.train",
            f"data.root={tmp_path}/dogImages",
            f"paths.output_dir={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "error: Dataset not found" in result.stderr and "Traceback" not in result.stderr
