"""``launch.tune backend=local``: an Optuna sweep on generated data — pruning, a crashing trial, best.yaml,
resume."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from dogbreed.config import ConfigError, compose
from launch.space import Categorical, Continuous, Integer, build_space, sagemaker_range


def journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


TRAIN = [  # tiny CPU runs: 2 epochs on the 4-class fixture, no logger/test/reports
    "data.num_workers=0", "data.batch_size=16", "model=mobilenet_v2", "model.allow_random_init=true",
    "trainer=cpu", "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0", "logger=none", "test=false",
    "++callbacks.debugger=null", "++callbacks.profiler=null",
]  # fmt: skip
SPACE = [  # the learning rate, and an optimizer choice with one value training cannot use
    "tune.space.batch_size=null", "tune.space.epochs=null", "tune.space.momentum=null",
    "tune.space.lr.low=1e-5",
    "+tune.space.opt={_target_:launch.space.Categorical,key:model.optimizer,choices:[sgd,no_such_optimizer]}",
    "tune.pruner.n_startup_trials=2", "tune.pruner.n_warmup_steps=0",
]  # fmt: skip
# Two good learners first, then one that cannot learn in two epochs (pruned: worse than the median of the
# first two at the same epoch), then one that crashes (FAIL, and the study goes on).
ENQUEUE = (
    "tune.enqueue=[{lr:0.05,opt:sgd},{lr:0.03,opt:sgd},{lr:1e-5,opt:sgd},{lr:0.05,opt:no_such_optimizer}]"
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    from launch import tune

    out = tmp_path_factory.mktemp("sweep")
    training = [f"data.root={synthetic_root}", *TRAIN]
    overrides = [*training, *SPACE, ENQUEUE, "backend=local", "tune.max_jobs=4", f"paths.output_dir={out}"]
    summary = tune.run(compose("launch_tune", overrides), overrides)
    return {"summary": summary, "out": out, "overrides": overrides, "training": training}


def test_sweep_prunes_records_the_crash_and_keeps_going(sweep: dict) -> None:
    study = optuna.load_study(study_name="dogbreed", storage=journal(sweep["out"] / "study.journal"))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert sweep["summary"]["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    pruned, failed = study.trials[2], study.trials[3]
    assert pruned.intermediate_values  # reported by the Lightning callback before it was stopped
    assert "no_such_optimizer" in failed.user_attrs["error"]
    assert study.best_trial.number in (0, 1) and study.best_value > 0.5  # 4 classes: chance is 0.25
    table = (sweep["out"] / "trials.csv").read_text()
    assert table.count("\n") == 5 and "PRUNED" in table and "no_such_optimizer" in table
    assert (sweep["out"] / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep["out"] / "trials" / "000" / "checkpoints" / "last.ckpt").is_file()


def test_best_yaml_trains_again_unchanged(
    sweep: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m dogbreed.train --config-path DIR --config-name best`` through the real @hydra.main."""
    from dogbreed import train

    best = OmegaConf.load(sweep["out"] / "best.yaml")
    winner = sweep["summary"]["best_overrides"]
    assert f"model.lr={best.model.lr}" in winner and best.model.optimizer == "sgd"
    assert best.export.enabled  # trial-only overrides (no export) are not part of it
    run_dir = tmp_path / "again"
    argv = ["dogbreed.train", "--config-path", str(sweep["out"]), "--config-name", "best",
            f"paths.output_dir={run_dir}", "trainer.max_epochs=1", "++evaluate.enabled=false"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    train.main()
    assert (run_dir / "model" / "model.pt").is_file() and (run_dir / "metrics.json").is_file()
    rerun = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert rerun.model == best.model and rerun.data.root == best.data.root


def test_rerun_resumes_the_same_study(sweep: dict) -> None:
    """Same storage, same max_jobs: the study is loaded, nothing is trained again, outputs are rewritten."""
    from launch import tune

    before = (sweep["out"] / "best.yaml").read_text()
    (sweep["out"] / "best.yaml").unlink()
    summary = tune.run(compose("launch_tune", sweep["overrides"]), sweep["overrides"])
    assert summary["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    assert (sweep["out"] / "best.yaml").read_text() == before


def test_space_suggests_within_ranges_and_maps_to_sagemaker() -> None:
    space = build_space(compose("launch_tune").tune.space)
    assert space["lr"] == Continuous(key="model.lr", low=0.001, high=0.1, log=True)
    assert space["epochs"] == Integer(key="trainer.max_epochs", low=2, high=5)
    assert space["batch_size"] == Categorical(key="data.batch_size", choices=[32, 64, 128, 256])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: sum(float(p.suggest(t)) for p in space.values()), n_trials=20)
    for trial in study.trials:
        assert 0.001 <= trial.params["model.lr"] <= 0.1 and 0.8 <= trial.params["model.momentum"] <= 0.99
        assert trial.params["trainer.max_epochs"] in range(2, 6) and trial.params["data.batch_size"] in (
            32,
            64,
            128,
            256,
        )
    from sagemaker import tuner

    ranges = {name: sagemaker_range(p, tuner).as_tuning_range(p.key) for name, p in space.items()}
    assert ranges["lr"] == {
        "Name": "model.lr",
        "MinValue": "0.001",
        "MaxValue": "0.1",
        "ScalingType": "Logarithmic",
    }
    assert ranges["batch_size"] == {"Name": "data.batch_size", "Values": ["32", "64", "128", "256"]}


def test_default_settings_open_a_study_and_report_nothing_done(tmp_path: Path) -> None:
    from launch import tune

    overrides = ["tune.max_jobs=0", f"paths.output_dir={tmp_path}"]
    summary = tune.run(compose("launch_tune", overrides), overrides)
    assert summary["trials"] == {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0} and "best_yaml" not in summary
    assert (tmp_path / "study.journal").is_file() and (tmp_path / "trials.csv").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.backend=elsewhere"], "tune.backend='elsewhere' must be local or sagemaker"),
        (["tune.direction=up"], "tune.direction='up' must be maximize, minimize or auto"),
        (["tune.enqueue=[{learning_rate:0.1}]"], "tune.enqueue: \\['learning_rate'\\] not in tune.space"),
        (["tune.space.epochs.low=9"], "low=9 must be <= high=5"),
        (["tune.storage=foo://x"], r"tune\.storage=foo://x is not a database URL SQLAlchemy knows"),
        (
            ["tune.storage=postgresql://u:pw@127.0.0.1:1/db"],  # nothing listens on port 1
            r"tune\.storage=postgresql://u:\*\*\*@127\.0\.0\.1:1/db: cannot open the database \(.*\); check "
            "that its server runs",
        ),
        (
            ["tune.storage=sqlite:////no/such/dir/s.db"],
            r"cannot open the database \(unable to open database file\); check that its folder exists",
        ),
    ],
)
def test_bad_tune_settings_name_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    from launch import tune

    all_overrides = [*overrides, f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=message):
        tune.run(compose("launch_tune", all_overrides), all_overrides)
    assert not (tmp_path / "study.journal").exists()  # refused before any study is opened


def test_a_tune_user_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import sys

    from launch import tune

    monkeypatch.setattr(sys, "argv", ["launch.tune", "tune.storage=foo://x", f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exited:
        tune.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tune.storage=foo://x is not a database URL") and err.count("\n") == 1
