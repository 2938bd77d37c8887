"""``launch.tune backend=local``: the search space as an Optuna study on this machine.

Each trial composes the training config (the CLI's training overrides + ``tune.trial_overrides`` + the
sampled values), trains in this process with Optuna's Lightning pruning callback reporting the objective
after every validation, and writes to ``<paths.output_dir>/trials/NNN``. The study lives in an RDB
(``sqlite:///<paths.output_dir>/study.db`` by default), so a rerun resumes it and several processes, on
one machine or many, can work the same study. A trial that raises is recorded FAIL; the study goes on.

Outputs (atomically written): ``best.yaml`` (a complete training config: ``python -m dogbreed.train
--config-path DIR --config-name best``), ``trials.csv`` and ``history.png``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dogbreed.atomic import write_text
from dogbreed.config import ConfigError, compose
from launch.overrides import hydra_value
from launch.space import Param, best_config, build_space, direction, override

log = logging.getLogger("launch.tune")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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


def open_study(tune: DictConfig, output_dir: Path) -> optuna.Study:
    """Create or load the study (``load_if_exists``: a rerun with the same storage resumes it)."""
    url = tune.get("storage") or f"sqlite:///{(output_dir / 'study.db').resolve()}"
    output_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and have been for years
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=tune.get("heartbeat_s") or None)
    pruner = hydra.utils.instantiate(tune.pruner) if tune.get("pruner") else optuna.pruners.NopPruner()
    return optuna.create_study(
        storage=storage,
        study_name=tune.study_name,
        sampler=hydra.utils.instantiate(tune.sampler),
        pruner=pruner,
        direction=direction(tune),
        load_if_exists=True,
    )


def enqueue(study: optuna.Study, space: dict[str, Param], points: Sequence[Any]) -> None:
    """``tune.enqueue`` (points by entry name) → Optuna's queue; points already tried are skipped."""
    for point in points or []:
        unknown = set(point) - set(space)
        if unknown:
            raise ConfigError(f"tune.enqueue: {sorted(unknown)} not in tune.space ({sorted(space)})")
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
    study = open_study(tune, output_dir)
    points = tune.get("enqueue")
    enqueue(study, space, OmegaConf.to_container(points, resolve=True) if points is not None else [])
    done = sum(t.state in FINISHED for t in study.trials)
    remaining = int(tune.max_jobs) - done
    if remaining > 0:
        objective = Objective(space, train_overrides, tune, output_dir / "trials")
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(int(tune.max_jobs), states=FINISHED)],
            gc_after_trial=True,
        )
    else:
        log.info(
            "Study %s already holds %d finished trials (tune.max_jobs=%d)",
            tune.study_name,
            done,
            tune.max_jobs,
        )
    summary = write_outputs(study, train_overrides, output_dir)
    summary.update(study=tune.study_name, output_dir=str(output_dir.resolve()))
    return summary
