"""python -m launch.tune [overrides]: hyperparameter search over conf/tune's space, locally or on SageMaker.

backend=local (default): an Optuna study on this machine (TPE sampler, pruning through Lightning with
tune/pruner=median|hyperband|none, storage <output dir>/study.journal or a database URL via tune.storage,
resumable, shared by every launch.tune process on that storage); writes best.yaml (python -m
dogbreed.train --config-path DIR --config-name best), trials.csv and history.png into paths.output_dir.
tune.max_jobs is the number of trials (in all, over every process).
backend=sagemaker: a HyperparameterTuner job (tune.strategy Bayesian|Random|Hyperband|Grid,
tune.max_jobs, tune.max_parallel_jobs, tune.early_stopping_type, tune.warm_start.parents); with
launch.wait=true it prints the best training job and its hyperparameters. --attach NAME (tune.attach=NAME)
reports on an existing tuning job.

    python -m launch.tune backend=local tune.max_jobs=8 experiment=demo
    python -m launch.tune backend=sagemaker launch.inputs=s3://bucket/dogImages launch.wait=true
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR, ConfigError, validate
from launch.cli import run_main, task_overrides, user_errors
from launch.overrides import training_overrides

log = logging.getLogger("launch.tune")


def run(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """Dispatch to the chosen backend with the training part of the CLI ``overrides``."""
    validate(cfg)
    train_overrides = training_overrides(overrides)
    backend = cfg.tune.backend
    if backend == "local":
        from launch.tune_local import run_local

        summary = run_local(cfg, train_overrides)
        counts = ", ".join(f"{n} {s.lower()}" for s, n in summary["trials"].items())
        print(f"study={summary['study']} trials: {counts}", flush=True)
        if "best_yaml" in summary:
            print(
                f"best_trial={summary['best_trial']} {cfg.tune.objective}={summary['best_value']:.6g} "
                + " ".join(summary["best_overrides"]),
                flush=True,
            )
            folder = summary["output_dir"]
            print(f"Train it: python -m dogbreed.train --config-path {folder} --config-name best", flush=True)
        return summary
    if backend == "sagemaker":
        from launch.tune_sagemaker import run_sagemaker

        return run_sagemaker(cfg, train_overrides)
    raise ConfigError(f"tune.backend={backend!r} must be local or sagemaker (also settable as backend=...)")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="launch_tune")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg, task_overrides())


if __name__ == "__main__":
    run_main(main, {"--attach": ("tune.attach", True)})
