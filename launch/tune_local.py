"""``launch.tune backend=local``: the search space as an Optuna study on this machine.

Each trial composes the training config (the CLI's training overrides + ``tune.trial_overrides`` + the
sampled values), trains in this process with Optuna's Lightning pruning callback reporting the objective
after every validation, and writes to ``<paths.output_dir>/trials/NNN``. The study lives in Optuna's
journal file ``<paths.output_dir>/study.journal`` by default (several processes on one machine, no
server) or in a database (``tune.storage=postgresql://…``: several machines), so a rerun resumes it and
several processes can work the same study; together they stop at exactly ``tune.max_jobs`` finished
trials. A trial that raises is recorded FAIL; the study goes on.

Outputs (atomically written): ``best.yaml`` (a complete training config: ``python -m dogbreed.train
--config-path DIR --config-name best``), ``trials.csv`` and ``history.png``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import optuna
import psutil
from omegaconf import DictConfig, OmegaConf
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from dogbreed.atomic import write_text
from dogbreed.config import ConfigError, compose
from dogbreed.redact import redact
from launch.overrides import hydra_value
from launch.space import Param, best_config, build_space, direction, override
from launch.sweep_page import write_sweep_page

log = logging.getLogger("launch.tune")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
JOURNAL = "study.journal"  # the default storage, in the output folder
DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql"}  # database → the extra with its driver


class Objective:
    """Train one trial's config; return the objective (``metrics[tune.objective]``)."""

    def __init__(
        self, space: dict[str, Param], base: Sequence[str], tune: DictConfig, trials_dir: Path
    ) -> None:
        self.space, self.base, self.tune, self.trials_dir = space, list(base), tune, trials_dir

    def overrides(self, trial: optuna.Trial) -> list[str]:
        return [override(p, p.suggest(trial)) for p in self.space.values()]

    def __call__(self, trial: optuna.Trial) -> float:
        from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

        from dogbreed.train import train

        chosen = self.overrides(trial)
        output_dir = self.trials_dir / f"{trial.number:03d}"
        trial.set_user_attr("overrides", chosen)
        trial.set_user_attr("output_dir", str(output_dir))
        try:
            trial_dir = f"paths.output_dir={hydra_value(str(output_dir))}"
            cfg = compose("train", [*self.base, *self.tune.trial_overrides, *chosen, trial_dir])
            pruning = PyTorchLightningPruningCallback(trial, monitor=str(self.tune.objective))
            metrics, _ = train(cfg, extra_callbacks=[pruning])
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        for key in ("val_loss", "val_acc", "test_acc", "epochs", "wall_time_s"):
            if metrics.get(key) is not None:
                trial.set_user_attr(key, metrics[key])
        value = metrics.get(str(self.tune.objective))
        if value is None:
            raise RuntimeError(
                f"training reported no {self.tune.objective!r} (tune.objective); it reported "
                f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}"
            )
        return float(value)


def open_storage(tune: DictConfig, output_dir: Path) -> optuna.storages.BaseStorage:
    """``tune.storage``: null → a journal file in the output folder (several processes on this machine,
    no server); a path → that journal file (a shared disk); a database URL → Optuna's RDB storage
    (``postgresql://``, ``mysql+pymysql://``: several machines; ``sqlite:///``: one process at a time)."""
    url = str(tune.get("storage") or output_dir / JOURNAL)
    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    # sqlite: wait for the writer holding the lock instead of failing with "database is locked"
    engine = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    try:
        return _rdb_storage(url, engine, tune.get("heartbeat_s") or None)
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        fix = "check that its folder exists and is writable"
        if scheme != "sqlite":
            fix = "check that its server runs and that the host, port, user and password in the URL are right"
        raise ConfigError(f"tune.storage={redact(url)}: cannot open the database ({reason}); {fix}") from None
    except (NoSuchModuleError, ArgumentError) as exc:
        raise ConfigError(
            f"tune.storage={redact(url)} is not a database URL SQLAlchemy knows ({exc}); use a journal file "
            "path, postgresql://user:password@host/db, mysql+pymysql://… or sqlite:///study.db"
        ) from None
    except ImportError as exc:
        extra = DRIVER_EXTRAS.get(scheme)
        fix = f"pip install 'dogbreed[{extra}]'" if extra else "install the SQLAlchemy driver for it"
        missing = exc.__cause__ or exc
        raise ConfigError(
            f"tune.storage={redact(url)}: the {scheme} database driver is not installed ({missing}); {fix}"
        ) from None


def _rdb_storage(url: str, engine: dict[str, Any], heartbeat_s: int | None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. Processes starting together on an empty database race to create Optuna's
    tables; the loser gets a duplicate-object error and, a moment later, finds the tables there."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempt = 0
    while True:
        try:
            # Heartbeats are "experimental" in Optuna, and have been for years.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s)
        except (IntegrityError, ProgrammingError):
            attempt += 1
            if attempt == 5:
                raise
            time.sleep(0.5 * attempt)


def open_study(tune: DictConfig, output_dir: Path) -> optuna.Study:
    """Create or load the study (``load_if_exists``: a rerun with the same storage resumes it)."""
    goal = direction(tune)  # checked before the storage is created
    output_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(tune, output_dir)
    pruner = hydra.utils.instantiate(tune.pruner) if tune.get("pruner") else optuna.pruners.NopPruner()
    return optuna.create_study(
        storage=storage,
        study_name=tune.study_name,
        sampler=hydra.utils.instantiate(tune.sampler),
        pruner=pruner,
        direction=goal,
        load_if_exists=True,
    )


class _Surplus(BaseException):
    """This process's new trial would be one more than ``tune.max_jobs`` (another process took the last
    slot). A BaseException, so Optuna records nothing: the trial goes back to the queue instead."""


def _claimed_before(study: optuna.Study, number: int) -> int:
    """Trials before ``number`` that are finished or running (the slots already taken)."""
    taken = (*FINISHED, TrialState.RUNNING)
    return sum(t.number < number for t in study.get_trials(deepcopy=False, states=taken))


def _fail_dead_workers(study: optuna.Study) -> None:
    """RUNNING trials of a process on this machine that no longer exists become FAIL (journal storage has
    no heartbeat; with an RDB, Optuna's heartbeat does the same across machines)."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not psutil.pid_exists(int(pid)):
            log.warning("Trial %d: its process %s is gone; recording it as failed", t.number, pid)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def run_trials(study: optuna.Study, objective: Objective, max_jobs: int) -> int:
    """Run trials until the study holds ``max_jobs`` finished ones, however many processes share it.

    One trial per ``optimize`` call (Optuna keeps its heartbeat, error handling and ``catch``); a trial
    first checks that it has a slot, so processes starting their last trials together never overshoot.
    Returns the number of trials this process ran.
    """
    ran = 0

    def claim_then_run(trial: optuna.Trial) -> float:
        if _claimed_before(study, trial.number) >= max_jobs:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            raise _Surplus
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return objective(trial)

    while True:
        _fail_dead_workers(study)
        if sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)) >= max_jobs:
            return ran
        try:
            study.optimize(claim_then_run, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except _Surplus:
            return ran
        ran += 1


def check_points(space: dict[str, Param], points: Sequence[Any]) -> None:
    """``tune.enqueue``'s points name only entries of ``tune.space`` (checked before the study is opened)."""
    for point in points or []:
        unknown = set(point) - set(space)
        if unknown:
            raise ConfigError(f"tune.enqueue: {sorted(unknown)} not in tune.space ({sorted(space)})")


def enqueue(study: optuna.Study, space: dict[str, Param], points: Sequence[Any]) -> None:
    """``tune.enqueue`` (points by entry name, :func:`check_points`) → Optuna's queue; points already tried
    are skipped."""
    for point in points or []:
        study.enqueue_trial({space[name].key: value for name, value in point.items()}, skip_if_exists=True)


def write_outputs(study: optuna.Study, base: Sequence[str], output_dir: Path) -> dict[str, Any]:
    """best.yaml, trials.csv and history.png; returns a summary."""
    import matplotlib

    matplotlib.use("Agg")
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    write_text(output_dir / "trials.csv", frame.to_csv(index=False))
    summary: dict[str, Any] = {"trials": {s.name: 0 for s in FINISHED}}
    for t in study.trials:
        if t.state in FINISHED:
            summary["trials"][t.state.name] += 1
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.warning("No trial completed: no best.yaml (see trials.csv for the errors)")
        return summary
    best = study.best_trial
    path = write_text(
        output_dir / "best.yaml", OmegaConf.to_yaml(best_config(base, best.user_attrs["overrides"]))
    )
    ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    tmp = output_dir / ".history.png"
    ax.figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    tmp.replace(output_dir / "history.png")
    summary.update(
        best_trial=best.number,
        best_value=best.value,
        best_overrides=best.user_attrs["overrides"],
        best_yaml=str(path),
    )
    return summary


def run_local(cfg: DictConfig, train_overrides: Sequence[str]) -> dict[str, Any]:
    """Run (or resume) the study until it holds ``tune.max_jobs`` finished trials; write the outputs."""
    tune = cfg.tune
    output_dir = Path(cfg.paths.output_dir)
    space = build_space(tune.space)
    points = tune.get("enqueue")
    points = OmegaConf.to_container(points, resolve=True) if points is not None else []
    check_points(space, points)
    study = open_study(tune, output_dir)
    enqueue(study, space, points)
    objective = Objective(space, train_overrides, tune, output_dir / "trials")
    ran = run_trials(study, objective, int(tune.max_jobs))
    if not ran:
        done = sum(t.state in FINISHED for t in study.trials)
        log.info(
            "Study %s already holds %d finished trials (tune.max_jobs=%d)",
            tune.study_name,
            done,
            tune.max_jobs,
        )
    summary = write_outputs(study, train_overrides, output_dir)
    summary["report"] = write_sweep_page(study, output_dir, summary)
    summary.update(study=tune.study_name, output_dir=str(output_dir.resolve()))
    return summary
