"""``python -m dogbreed.train [hydra overrides]``: fit, test the best checkpoint, export, report.

``train(cfg)`` is the whole job and returns ``(metrics, objects)`` so tests, sweepers and launch/ call
it directly; ``main`` is only the ``@hydra.main`` wrapper. Outputs go to ``paths.output_dir``
(layout in README). The last stdout lines are ``key=value`` pairs, one per final metric.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from dogbreed.atomic import write_json
from dogbreed.backbones import WeightsUnavailableError
from dogbreed.callbacks.interrupt import exit_status_on_interrupt
from dogbreed.callbacks.metric_lines import FINAL_KEYS, format_value
from dogbreed.config import CONFIG_DIR, ConfigError, instantiate, validate
from dogbreed.console import quiet_third_party
from dogbreed.data.layout import DatasetError
from dogbreed.lr_find import mode as lr_find_mode
from dogbreed.perf import auto_precision
from dogbreed.tracking import log_config, log_final

log = logging.getLogger("dogbreed.train")


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null ``_target_`` entry of a callbacks/logger group, in order."""
    objects = []
    for _name, node in (group or {}).items():
        if node is not None and "_target_" in node:
            objects.append(instantiate(node))
    return objects


def _save_config(cfg: DictConfig, output_dir: Path) -> None:
    """``.hydra/config.yaml`` as Hydra writes it (kept when Hydra already did)."""
    target = output_dir / ".hydra" / "config.yaml"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, target)


def _progress_callback() -> list[pl.Callback]:
    """Rich progress bar in a terminal; none otherwise (the per-epoch metric lines remain)."""
    if sys.stdout.isatty():
        from lightning.pytorch.callbacks import RichProgressBar

        return [RichProgressBar()]
    return []


def build(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from ``cfg``.

    ``extra_callbacks`` are added as they are (e.g. an Optuna pruning callback from launch.tune).
    """
    datamodule = instantiate(cfg.data, seed=cfg.get("seed") or 0, _convert_="partial")
    model = instantiate(cfg.model, class_names=datamodule.class_names, _convert_="partial")
    datamodule.attach_model(model)
    callbacks = [
        *_instantiate_group(cfg.get("callbacks")),
        *_progress_callback(),
        *(extra_callbacks or []),
    ]
    loggers = _instantiate_group(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    precision = cfg.trainer.get("precision", "32-true")
    if precision == "auto":
        precision = auto_precision(cfg.trainer.get("accelerator", "auto"))
        log.info("trainer.precision=auto → %s", precision)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        precision=precision,
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=any(isinstance(c, pl.callbacks.ProgressBar) for c in callbacks),
    )
    return {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    ckpt = trainer.checkpoint_callback
    path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    return path or None


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def train(
    cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, test, export; write metrics.json. Returns ``(metrics, objects)``."""
    quiet_third_party(resuming=cfg.get("ckpt_path") is not None)
    validate(cfg)
    lr_find = lr_find_mode(cfg)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _save_config(cfg, output_dir)
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)

    objects = build(cfg, extra_callbacks)
    model, datamodule, trainer = objects["model"], objects["datamodule"], objects["trainer"]
    log.info(
        "Backbone %s (%s): %s",
        cfg.model.backbone,
        cfg.model.weights,
        "pretrained weights loaded" if model.pretrained else "RANDOM INITIALISATION",
    )

    if lr_find:
        from dogbreed.lr_find import find_lr, print_result

        print_result(find_lr(cfg, objects, apply=lr_find == "apply"))
    log_config(trainer.loggers, cfg)
    with exit_status_on_interrupt(trainer):  # SIGTERM/SIGINT: checkpoint saved, exit 143/130
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics: dict[str, Any] = {
        "val_loss": _metric(trainer.callback_metrics, "val_loss"),
        "val_acc": _metric(trainer.callback_metrics, "val_acc"),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and getattr(ckpt_cb, "best_model_score", None) is not None:
        metrics["val_acc"] = float(ckpt_cb.best_model_score)
    best = _best_checkpoint(trainer)
    metrics["best_checkpoint"] = best

    tested_best = bool(cfg.get("test", True)) and best is not None
    if cfg.get("test", True):
        results = trainer.test(
            model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
        for key, value in (results[0] if results else {}).items():
            metrics[key] = float(value)

    finished = not trainer.fast_dev_run and trainer.is_global_zero
    do_export = finished and cfg.get("export") and cfg.export.get("enabled", True)
    do_evaluate = finished and cfg.get("evaluate") and cfg.evaluate.get("enabled", True)
    if do_export or do_evaluate:
        from dogbreed.predict import load_checkpoint

        # trainer.test(ckpt_path=best) has already loaded the best weights into model: reuse them
        best_model = load_checkpoint(best) if best and not tested_best else model

    if do_export:
        from dogbreed.export import export_all

        paths = export_all(
            best_model, output_dir / "model", cfg.export.get("handler_module", "serve.inference")
        )
        metrics.update({k: str(v) for k, v in paths.items()})
        print(f"Model exported to {paths['model_pt']} and {paths['model_tar']}", flush=True)

    if do_evaluate:
        from dogbreed.evaluate import evaluate_run

        report = evaluate_run(cfg, best_model, datamodule, output_dir, label=best)
        metrics.update(report.headline())
        print(f"Evaluation report: {report.html}", flush=True)

    metrics["objective"] = metrics.get(cfg.get("objective", "val_acc"))
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    metrics["output_dir"] = str(output_dir)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics, sort_keys=True)
        from dogbreed.runpage import write_run_page

        page = write_run_page(cfg, metrics, objects)
        log_final(trainer.loggers, metrics, output_dir)
        if page is not None:
            print(f"Run report: {page}", flush=True)
        for key in FINAL_KEYS:
            if metrics.get(key) is not None:
                print(f"{key}={format_value(float(metrics[key]))}", flush=True)
    return metrics, objects


USER_ERRORS: tuple[type[BaseException], ...] = (
    DatasetError,
    ConfigError,
    WeightsUnavailableError,
    FileNotFoundError,
    ValueError,
)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry; returns the objective so Hydra sweepers can optimise it.

    Errors a user can fix (missing data, bad config values, unavailable weights) print one clear
    message and exit with status 2 instead of a stack trace.
    """
    try:
        metrics, _ = train(cfg)
    except USER_ERRORS as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    return metrics.get("objective")


if __name__ == "__main__":
    main()
