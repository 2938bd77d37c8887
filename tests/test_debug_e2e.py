"""The Debugger inside `dogbreed.train` on the tiny synthetic dataset: a healthy run and `debug=broken`."""

from __future__ import annotations

import json
from pathlib import Path

from dogbreed.debug.builtin_rules import RULES


def test_a_training_run_writes_both_reports(trained_run: dict) -> None:
    reports = Path(trained_run["output_dir"]) / "reports"
    report = json.loads((reports / "debugger.json").read_text())
    assert [r["name"] for r in report["rules"]] == list(RULES)
    assert {r["status"] for r in report["rules"]} <= {"IssuesFound", "NoIssuesFound"}
    status = {r["name"]: r["status"] for r in report["rules"]}
    assert (
        status["VanishingGradient"]
        == status["ExplodingTensor"]
        == status["WeightUpdateRatio"]
        == "NoIssuesFound"
    )
    assert report["stopped"] is None and report["last_step"] == trained_run["global_step"]
    assert "Train vs validation loss" in (reports / "debugger.html").read_text()


def test_broken_option_is_caught_and_stopped(cfg_factory, tmp_path: Path) -> None:
    from dogbreed.train import train

    cfg = cfg_factory(
        [
            "debug=broken",
            "trainer.max_epochs=10",
            "logger=none",
            "test=false",
            "export.enabled=false",
            # 3 steps per epoch here (the demo data has 15): compare validation losses one epoch apart
            "callbacks.debugger.rules.LossNotDecreasing.num_steps=3",
        ]
    )
    assert cfg.model.lr == 0.0 and cfg.callbacks.early_stopping is None
    metrics, objects = train(cfg)
    reports = tmp_path / "run" / "reports"
    report = json.loads((reports / "debugger.json").read_text())
    status = {r["name"]: r["status"] for r in report["rules"]}
    assert status["LossNotDecreasing"] == status["WeightUpdateRatio"] == "IssuesFound"
    assert status["VanishingGradient"] == status["ExplodingTensor"] == "NoIssuesFound"
    assert report["stopped"] == {"rule": "LossNotDecreasing", "step": 6}
    assert metrics["global_step"] == 6 and objects["trainer"].should_stop  # 2 of 10 epochs
    assert (reports / "debugger.html").is_file()
    assert (
        report["smdebug"] is None and not (tmp_path / "run" / "debug-output").exists()
    )  # not a SageMaker job
