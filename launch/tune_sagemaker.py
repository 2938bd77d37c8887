"""``launch.tune backend=sagemaker``: the search space as a SageMaker HyperparameterTuner job.

The tuner runs the same training job ``launch.train`` describes (``launch.job``), through the SDK
``launch.sdk`` picks; its objective is one of the job's metric definitions (the regexes over the lines
training prints). ``tune.attach=NAME`` (``--attach NAME``)
reports on an existing tuning job instead of starting one. With ``launch.wait=true`` (or attach) it waits,
prints the best training job, its objective and hyperparameters, and writes ``best.json`` — plus
``best.yaml`` when the hyperparameters compose into a training config.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dogbreed.atomic import write_text
from dogbreed.config import ConfigError
from launch.cli import write_json
from launch.job import Tuning, explained_rejection, job_extras, metric_definitions, training_job
from launch.overrides import from_hyperparameter
from launch.session import Session, console_url, make_session, timeout_s, wait_until
from launch.source import staged_source
from launch.space import Categorical, best_config, build_space, direction

log = logging.getLogger("launch.tune")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")


def tuning_job_name(session: Session, cfg: DictConfig) -> str:
    name = cfg.tune.get("job_name") or session.sdk.unique_name(
        cfg.launch.base_job_name, max_length=32, short=True
    )
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name):
        raise ConfigError(f"tune.job_name={name!r} must be 1-32 letters, digits and hyphens")
    return name


def settings(tune: DictConfig) -> dict[str, Any]:
    """Strategy, objective, ranges, limits, early stopping, warm start (``launch.job.Tuning``'s fields),
    checked against SageMaker's rules before anything is sent."""
    space = build_space(tune.space)
    names = {d["Name"] for d in metric_definitions()}
    if tune.objective not in names:
        raise ConfigError(
            f"tune.objective={tune.objective!r} is not a metric the training prints; use one of "
            f"{sorted(names)}"
        )
    if tune.strategy not in STRATEGIES:
        raise ConfigError(f"tune.strategy={tune.strategy!r} must be one of {', '.join(STRATEGIES)}")
    result: dict[str, Any] = {
        "objective": str(tune.objective),
        "objective_type": direction(tune).capitalize(),
        "ranges": {p.key: p for p in space.values()},
        "strategy": str(tune.strategy),
        "max_jobs": int(tune.max_jobs),
        "max_parallel_jobs": int(tune.max_parallel_jobs),
        "early_stopping_type": str(tune.early_stopping_type),
        "random_seed": tune.get("random_seed"),
        "max_runtime_s": tune.get("max_runtime_s"),
    }
    if tune.strategy == "Hyperband":
        if tune.early_stopping_type != "Off":
            raise ConfigError(
                "tune.early_stopping_type must be Off with tune.strategy=Hyperband "
                "(Hyperband stops jobs itself)"
            )
        result["hyperband"] = (int(tune.hyperband.min_resource), int(tune.hyperband.max_resource))
    if tune.strategy == "Grid":
        bad = [p.key for p in space.values() if not isinstance(p, Categorical)]
        if bad:
            raise ConfigError(f"tune.strategy=Grid needs categorical parameters only; {bad} are ranges")
        result["max_jobs"] = None
    parents = list(tune.warm_start.get("parents") or [])
    if parents:
        kind = str(tune.warm_start.type)
        if kind not in ("IdenticalDataAndAlgorithm", "TransferLearning"):
            raise ConfigError(
                f"tune.warm_start.type={kind!r} must be IdenticalDataAndAlgorithm or TransferLearning"
            )
        result["warm_start"] = (kind, tuple(parents))
    return result


def best_job(session: Session, name: str) -> dict[str, Any]:
    """The tuning job's best training job: name, objective value, tuned hyperparameters."""
    desc = session.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    best = desc.get("BestTrainingJob") or {}
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return {
        "tuning_job": name,
        "status": desc["HyperParameterTuningJobStatus"],
        "training_job": best.get("TrainingJobName"),
        "objective": metric.get("MetricName"),
        "value": metric.get("Value"),
        "hyperparameters": best.get("TunedHyperParameters") or {},
        "counters": desc.get("TrainingJobStatusCounters"),
    }


def write_best(best: dict[str, Any], train_overrides: Sequence[str], output_dir: Path) -> None:
    """best.json always; best.yaml when the tuned hyperparameters compose into a training config."""
    write_json(output_dir / "best.json", best)
    chosen = [from_hyperparameter(k, v) for k, v in best["hyperparameters"].items()]
    try:
        cfg = best_config(train_overrides, chosen)
    except Exception as exc:  # Hydra raises several types; all mean "these keys do not fit this config"
        log.warning("best.yaml not written: %s do not compose into a training config (%s)", chosen, exc)
        return
    write_text(output_dir / "best.yaml", OmegaConf.to_yaml(cfg))


def run_sagemaker(cfg: DictConfig, train_overrides: Sequence[str]) -> dict[str, Any]:
    """Start (or attach to) the tuning job; report the best training job when waiting."""
    launch, tune = cfg.launch, cfg.tune
    session = make_session(launch)
    if tune.get("attach"):
        name = str(tune.attach)
    else:
        name = tuning_job_name(session, cfg)
        checked = settings(tune)
        with staged_source(job_extras(session, cfg, debugger_hook=False)) as source:
            # The tuning API has no Debugger or profiler settings for its training jobs.
            training = replace(training_job(cfg, session, train_overrides, source, name), debugger=None)
            with explained_rejection(training):
                session.sdk.start_tuning(session, Tuning(name=name, training=training, **checked))
    print(f"tuning_job={name}", flush=True)
    print(f"Follow it at {console_url(session.region, 'hyper-tuning-jobs', name)}", flush=True)
    record: dict[str, Any] = {"tuning_job": name, "region": session.region}
    if launch.wait or tune.get("attach"):
        wait_until(
            lambda: session.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
            "HyperParameterTuningJobStatus",
            f"Tuning job {name}",
            float(launch.poll_s),
            timeout_s=timeout_s(cfg, "tuning"),
            timeout_key="launch.timeouts.tuning_s",
            ok=("Completed", "Stopped"),
        )
        record = best_job(session, name)
        print(
            f"best_training_job={record['training_job']} {record['objective']}={record['value']}", flush=True
        )
        for key, value in record["hyperparameters"].items():
            print(f"  {from_hyperparameter(key, value)}", flush=True)
        write_best(record, train_overrides, Path(cfg.paths.output_dir))
    return record
