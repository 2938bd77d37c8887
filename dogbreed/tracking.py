"""What an experiment tracker gets beyond Lightning's own logging (``logger=mlflow``).

Lightning's MLFlowLogger already logs the module's hyperparameters and every ``self.log`` metric per
step/epoch. ``log_config`` adds the composed config's training keys as params before the fit (batch size,
epochs, data root… are not the module's); ``log_final`` adds the final numbers of ``metrics.json`` as
``final/<name>`` metrics and the run's reports, model, metrics.json and config as artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
# Config sections logged as params (rule parameters and logger settings are not training knobs).
PARAM_SECTIONS = ("data", "model", "trainer", "seed", "objective", "lr_find")
ARTIFACTS = (("reports", "reports"), ("model", "model"), ("metrics.json", ""), (".hydra", "config"))


def mlflow_loggers(loggers: Iterable[Any]) -> list[Any]:
    from lightning.pytorch.loggers import MLFlowLogger

    return [lg for lg in loggers if isinstance(lg, MLFlowLogger)]


def flat_params(cfg: DictConfig, sections: Iterable[str] = PARAM_SECTIONS) -> dict[str, Any]:
    """``{"model.lr": 0.01, "data.batch_size": 32, …}`` from the resolved config."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    container = OmegaConf.to_container(cfg, resolve=True)
    for section in sections:
        if section in container:
            walk(section, container[section])
    return flat


def log_config(loggers: Iterable[Any], cfg: DictConfig) -> None:
    """Log the training keys of ``cfg`` as params of every MLflow run (before the fit)."""
    for logger in mlflow_loggers(loggers):
        logger.log_hyperparams(flat_params(cfg))


def log_final(loggers: Iterable[Any], metrics: dict[str, Any], output_dir: str | Path) -> None:
    """Final numbers as ``final/<name>`` metrics; reports/, model/, metrics.json, config as artifacts."""
    output_dir = Path(output_dir)
    numbers = {
        f"final/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for logger in mlflow_loggers(loggers):
        try:
            logger.log_metrics(numbers, step=int(metrics.get("global_step") or 0))
            client, run_id = logger.experiment, logger.run_id
            for name, artifact_path in ARTIFACTS:
                path = output_dir / name
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path or None)
                elif path.is_file():
                    client.log_artifact(run_id, str(path), artifact_path or None)
            log.info("MLflow run %s: final metrics and artifacts logged (%s)", run_id, logger._tracking_uri)
        except Exception:  # noqa: BLE001 - a tracking server hiccup must not fail a finished run
            log.exception("Could not log the final metrics/artifacts to MLflow (%s)", logger._tracking_uri)
