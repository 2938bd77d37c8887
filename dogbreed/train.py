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
from dogbreed.callbacks.metric_lines import FINAL_KEYS, MetricLines, format_value
from dogbreed.config import CONFIG_DIR, ConfigError, instantiate, validate
from dogbreed.console import quiet_third_party
from dogbreed.data.cached_mode import CachedFeaturesMode
from dogbreed.data.layout import DatasetError
from dogbreed.lr_find import mode as lr_find_mode
from dogbreed.metric_format import LAST_PREFIX, VAL_KEYS
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


def build(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from ``cfg``, as composed: the
    callbacks are ``cfg.callbacks`` (conf/callbacks/), the precision ``cfg.trainer.precision`` (resolved by
    ``${precision:auto}``). ``extra_callbacks`` are added as they are (e.g. launch.tune's Optuna pruning).
    ``objects["features"]`` is the cached-features mode, or None when training runs on images."""
    datamodule = instantiate(cfg.data, seed=cfg.get("seed") or 0, _convert_="partial")
    model = instantiate(cfg.model, class_names=datamodule.class_names, _convert_="partial")
    datamodule.preprocess = model.preprocess  # resize, crop and normalisation from the backbone's weights
    # data.cache with a frozen backbone: the datamodule serves the backbone's features, computed once per
    # image and view, and the model runs only its head on them (None: both stay on images).
    features = CachedFeaturesMode.attach(model, datamodule)
    callbacks = [
        *_instantiate_group(cfg.get("callbacks")),
        *(extra_callbacks or []),
    ]
    if cfg.trainer.get("precision") == "auto":  # the command line's spelling of the default's resolver
        cfg.trainer.precision = "${precision:auto}"
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "features": features,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    ckpt = trainer.checkpoint_callback
    path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    return path or None


def _validation_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """``best_epoch`` and its ``val_*`` (the checkpoint the run tests and exports), the last epoch's
    ``last_val_*``: MetricLines keeps them. Without callbacks.metric_lines only the last epoch is known, and
    it is the tested one only when no checkpoint callback picks a best."""
    lines = next((c for c in trainer.callbacks if isinstance(c, MetricLines)), None)
    if lines is not None:
        return lines.summary()
    found = trainer.callback_metrics
    last = {key: float(found[key]) for key in VAL_KEYS if key in found}
    picks_best = getattr(trainer.checkpoint_callback, "monitor", None) is not None
    best = {} if picks_best else {"best_epoch": trainer.current_epoch - 1, **last}
    return {"best_epoch": None, **dict.fromkeys(VAL_KEYS), **best} | {
        f"{LAST_PREFIX}{key}": value for key, value in last.items()
    }


def _say_why_it_stopped_early(trainer: pl.Trainer) -> None:
    """One console line when EarlyStopping ended the fit before ``trainer.max_epochs``."""
    stop = trainer.early_stopping_callback
    if trainer.is_global_zero and stop is not None and stop.stopped_epoch:
        print(
            f"Stopped early after epoch {stop.stopped_epoch}: {stop.monitor} had not improved for "
            f"{stop.patience} epochs (best {format_value(float(stop.best_score))}; callbacks.early_stopping)",
            flush=True,
        )


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
    _say_why_it_stopped_early(trainer)
    metrics: dict[str, Any] = {
        **_validation_metrics(trainer),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
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
            value = metrics.get(key)
            if value is not None:
                print(f"{key}={value if isinstance(value, int) else format_value(float(value))}", flush=True)
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
