"""``launch.tune backend=local`` from several processes on one storage: a journal file (one machine) and a
real PostgreSQL server (many machines) end with exactly ``tune.max_jobs`` finished trials, every process
exits 0, nothing says "database is locked", and the database password appears in no saved file or log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import postgres_server
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from dogbreed.config import ConfigError
from dogbreed.redact import redact
from launch.tune_local import FINISHED, open_storage, run_trials

TRIAL = [  # each trial: one tiny epoch
    "data.num_workers=0", "data.batch_size=16", "model=mobilenet_v2", "model.allow_random_init=true",
    "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0", "logger=none", "test=false", "tune.space.batch_size=null",
    "tune.space.epochs=null", "tune.space.momentum=null", "tune/pruner=none",
]  # fmt: skip
MAX_JOBS = 5


@pytest.fixture(scope="module")
def postgres_url():
    try:
        with postgres_server.server() as url:
            yield url
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def start_tune(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "launch.tune", "backend=local", f"tune.max_jobs={MAX_JOBS}", *TRIAL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def finish(procs: list[subprocess.Popen]) -> list[str]:
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert "database is locked" not in output
    return outputs


def finished(storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="dogbreed", storage=storage)
    return [t for t in study.trials if t.state in FINISHED]


@pytest.mark.slow  # two sweeps in subprocesses (19 s): the slow lane runs it, next to the PostgreSQL one
def test_processes_sharing_a_journal_file_run_exactly_max_jobs_trials(synthetic_root, tmp_path):
    out = tmp_path / "sweep"  # the same folder for both: its study.journal is the shared storage
    args = [f"data.root={synthetic_root}", f"paths.output_dir={out}"]
    outputs = finish([start_tune(args, tmp_path) for _ in range(2)])
    trials = finished(open_storage(OmegaConf.create({"storage": None}), out))
    assert len(trials) == MAX_JOBS
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials
    assert all("best_trial=" in o for o in outputs)
    assert len({t.user_attrs["output_dir"] for t in trials}) == MAX_JOBS  # one folder per trial


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_processes_sharing_a_postgres_database_run_exactly_max_jobs_and_never_show_the_password(
    synthetic_root, tmp_path, postgres_url
):
    password = postgres_server.PASSWORD
    data = f"data.root={synthetic_root}"
    # One process names the URL on its command line, the other reads it from the environment.
    literal = start_tune(
        [data, f"tune.storage={postgres_url}", f"paths.output_dir={tmp_path / 'a'}"], tmp_path
    )
    from_env = start_tune(
        [data, "tune.storage=${oc.env:DOGBREED_TUNE_STORAGE}", f"paths.output_dir={tmp_path / 'b'}"],
        tmp_path,
        env={"DOGBREED_TUNE_STORAGE": postgres_url},
    )
    outputs = finish([literal, from_env])
    trials = finished(optuna.storages.RDBStorage(postgres_url))
    assert len(trials) == MAX_JOBS
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials
    for output in outputs:
        assert password not in output
    saved = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".csv", ".log", ".json")]
    assert any(p.name == "overrides.yaml" for p in saved)
    leaks = [p for p in saved if password in p.read_text(errors="replace")]
    assert not leaks
    assert "${oc.env:DOGBREED_TUNE_STORAGE}" in (tmp_path / "b" / ".hydra" / "config.yaml").read_text()
    assert "postgresql://dogbreed:***@127.0.0.1" in (tmp_path / "a" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://u:hunter2@db/x", "psycopg", "postgres"),
        ("mysql+pymysql://u:hunter2@db/x", "pymysql", "mysql"),
    ],
)
def test_a_missing_database_driver_says_which_extra_to_install(monkeypatch, tmp_path, url, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ConfigError) as err:
        open_storage(OmegaConf.create({"storage": url}), tmp_path)
    assert f"pip install 'dogbreed[{extra}]'" in str(err.value)
    assert "tune.storage=" in str(err.value) and "hunter2" not in str(err.value)


def test_redact_masks_url_passwords_only():
    assert redact("storage: postgresql://me:p@ss@db:5432/x ok") == "storage: postgresql://me:***@db:5432/x ok"
    assert redact("- tune.storage=mysql+pymysql://u:pw@h/db") == "- tune.storage=mysql+pymysql://u:***@h/db"
    for unchanged in (
        "postgresql://me@db/x",
        "https://example.com:8443/a",
        "${oc.env:DOGBREED_TUNE_STORAGE}",
    ):
        assert redact(unchanged) == unchanged


def test_a_trial_that_lost_the_last_slot_to_another_process_goes_back_to_the_queue(tmp_path):
    study = optuna.create_study(storage=open_storage(OmegaConf.create({"storage": None}), tmp_path))
    real_ask = study.ask
    rival = []

    def ask_after_a_rival(*args, **kwargs):
        if not rival:  # another process asks between this one's check and its ask
            rival.append(real_ask())
        return real_ask(*args, **kwargs)

    study.ask = ask_after_a_rival
    called = []
    assert run_trials(study, lambda trial: called.append(trial) or 1.0, max_jobs=1) == 0
    assert not called  # no training for a trial past max_jobs
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.RUNNING, TrialState.WAITING]  # the rival's, and ours back in the queue


def test_a_running_trial_of_a_dead_process_on_this_machine_is_recorded_failed(tmp_path):
    study = optuna.create_study(storage=open_storage(OmegaConf.create({"storage": None}), tmp_path))
    orphan = study.ask()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 12345}")  # no such pid
    elsewhere = study.ask()
    elsewhere.set_user_attr("worker", f"another-host:{os.getpid()}")
    assert run_trials(study, lambda trial: 0.5, max_jobs=3) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.FAIL, 1: TrialState.RUNNING, 2: TrialState.COMPLETE}
