"""``launch.tune backend=sagemaker``: the search space as a SageMaker HyperparameterTuner job.

The tuner wraps the same estimator ``launch.train`` builds; its objective is one of the estimator's
metric definitions (the regexes over the lines training prints). ``tune.attach=NAME`` (``--attach NAME``)
reports on an existing tuning job instead of starting one. With ``launch.wait=true`` (or attach) it waits,
prints the best training job, its objective and hyperparameters, and writes ``best.json`` — plus
``best.yaml`` when the hyperparameters compose into a training config.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dogbreed.atomic import write_text
from dogbreed.config import ConfigError
from launch.cli import write_json
from launch.estimator import build_estimator, channels, metric_definitions, staged_source
from launch.overrides import from_hyperparameter
from launch.session import console_url, make_session, wait_until
from launch.space import Categorical, build_space
from launch.tune_local import best_config, direction

log = logging.getLogger("launch.tune")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")


def tuning_job_name(cfg: DictConfig) -> str:
    from sagemaker.utils import name_from_base

    name = cfg.tune.get("job_name") or name_from_base(cfg.launch.base_job_name, max_length=32, short=True)
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name):
        raise ConfigError(f"tune.job_name={name!r} must be 1-32 letters, digits and hyphens")
    return name


def tuner_kwargs(tune: DictConfig) -> dict[str, Any]:
    """Strategy, objective, limits, early stopping, warm start: checked against SageMaker's rules first."""
    from sagemaker.tuner import HyperbandStrategyConfig, StrategyConfig, WarmStartConfig, WarmStartTypes

    space = build_space(tune.space)
    names = {d["Name"] for d in metric_definitions()}
    if tune.objective not in names:
        raise ConfigError(
            f"tune.objective={tune.objective!r} is not a metric the training prints; use one of "
            f"{sorted(names)}"
        )
    if tune.strategy not in STRATEGIES:
        raise ConfigError(f"tune.strategy={tune.strategy!r} must be one of {', '.join(STRATEGIES)}")
    kwargs: dict[str, Any] = {
        "objective_metric_name": str(tune.objective),
        # The tuner does not take them from a framework estimator: without them SageMaker finds no objective.
        "metric_definitions": metric_definitions(),
        "objective_type": direction(tune).capitalize(),
        "hyperparameter_ranges": {p.key: p.sagemaker() for p in space.values()},
        "strategy": str(tune.strategy),
        "max_jobs": int(tune.max_jobs),
        "max_parallel_jobs": int(tune.max_parallel_jobs),
        "early_stopping_type": str(tune.early_stopping_type),
        "random_seed": tune.get("random_seed"),
        "max_runtime_in_seconds": tune.get("max_runtime_s"),
    }
    if tune.strategy == "Hyperband":
        if tune.early_stopping_type != "Off":
            raise ConfigError(
                "tune.early_stopping_type must be Off with tune.strategy=Hyperband "
                "(Hyperband stops jobs itself)"
            )
        hb = tune.hyperband
        kwargs["strategy_config"] = StrategyConfig(
            HyperbandStrategyConfig(max_resource=int(hb.max_resource), min_resource=int(hb.min_resource))
        )
    if tune.strategy == "Grid":
        bad = [p.key for p in space.values() if not isinstance(p, Categorical)]
        if bad:
            raise ConfigError(f"tune.strategy=Grid needs categorical parameters only; {bad} are ranges")
        kwargs["max_jobs"] = None
    parents = list(tune.warm_start.get("parents") or [])
    if parents:
        kwargs["warm_start_config"] = WarmStartConfig(
            WarmStartTypes(tune.warm_start.type), parents=set(parents)
        )
    return kwargs


def best_job(session, name: str) -> dict[str, Any]:
    """The tuning job's best training job: name, objective value, tuned hyperparameters."""
    desc = session.sagemaker_client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
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
    from sagemaker.tuner import HyperparameterTuner

    launch, tune = cfg.launch, cfg.tune
    session = make_session(launch)
    if tune.get("attach"):
        name = str(tune.attach)
    else:
        name = tuning_job_name(cfg)
        with staged_source(list(launch.extras or [])) as source:
            estimator = build_estimator(cfg, session, train_overrides, source, name)
            tuner = HyperparameterTuner(
                estimator, base_tuning_job_name=launch.base_job_name, **tuner_kwargs(tune)
            )
            tuner.fit(channels(cfg, session), job_name=name, wait=False)
    region = session.boto_region_name
    print(f"tuning_job={name}", flush=True)
    print(f"Follow it at {console_url(region, 'hyper-tuning-jobs', name)}", flush=True)
    record: dict[str, Any] = {"tuning_job": name, "region": region}
    if launch.wait or tune.get("attach"):
        client = session.sagemaker_client
        wait_until(
            lambda: client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
            "HyperParameterTuningJobStatus",
            f"Tuning job {name}",
            float(launch.poll_s),
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
