"""One page per run: ``reports/index.html`` (self-contained, opens offline) and ``reports/results.png``.

``write_run_page(cfg, metrics, objects)`` is called by ``dogbreed.train`` after ``metrics.json``: the
headline numbers, what happened (and what the debugger, profiler and evaluation found), the per-epoch
curves from the CSV logger, training images as the model saw them, links to the other reports, where the
model is and the exact commands to serve, predict with and evaluate it. A failure here is logged, never
raised: the training it describes has already succeeded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from dogbreed import html as H
from dogbreed.atomic import write_bytes
from dogbreed.evaluate.plots import to_png
from dogbreed.runpage import page as P
from dogbreed.runpage.history import Epochs, curves_figure, read_history
from dogbreed.runpage.samples import samples_figure, training_samples

log = logging.getLogger(__name__)
INDEX = "index.html"
RESULTS = "results.png"


def _metrics_csv(trainer: pl.Trainer) -> Path | None:
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / "metrics.csv"
            return path if path.is_file() else None
    return None


def _run_info(cfg: DictConfig, objects: dict[str, Any]) -> dict[str, Any]:
    trainer, model, datamodule = objects["trainer"], objects["model"], objects["datamodule"]
    stop = trainer.early_stopping_callback
    return {
        "backbone": cfg.model.backbone,
        "weights": cfg.model.weights,
        "pretrained": bool(getattr(model, "pretrained", False)),
        "freeze": model.hparams.get("freeze", cfg.model.freeze),
        "classes": len(datamodule.class_names),
        "data_root": str(datamodule.root),
        "precision": str(trainer.precision),
        "device": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "max_epochs": cfg.trainer.max_epochs,
        "stopped_early": stop.stopped_epoch if stop is not None and stop.stopped_epoch else None,
        "early_monitor": stop.monitor if stop is not None else None,
        "patience": stop.patience if stop is not None else None,
    }


def _example_image(datamodule: Any) -> str:
    """A real image of the run's test (else validation) split, so the predict command runs as printed."""
    for split in ("test", "valid", "val"):
        folder = datamodule.layout.splits.get(split)
        if folder is not None:
            image = next((p for p in sorted(Path(folder).rglob("*")) if p.is_file()), None)
            if image is not None:
                return str(image.resolve())
    return "IMAGE.jpg"


def commands(cfg: DictConfig, metrics: dict[str, Any], objects: dict[str, Any]) -> list[tuple[str, str]]:
    """What to run next, with this run's paths filled in."""
    model_pt, model_tar = metrics.get("model_pt"), metrics.get("model_tar")
    best = metrics.get("best_checkpoint")
    image = P.quote(_example_image(objects["datamodule"]))
    out = Path(cfg.paths.output_dir).resolve()
    overrides = out / ".hydra" / "overrides.yaml"
    cmds: list[tuple[str, str]] = []
    if overrides.is_file():
        args = " ".join(P.quote(o) for o in (OmegaConf.load(overrides) or []))
        cmds.append(("This run was started with", f"python -m dogbreed.train {args}".rstrip()))
    if model_pt:
        pt = P.quote(Path(model_pt).resolve())
        cmds += [
            (
                "Serve it (SageMaker's endpoint contract on http://127.0.0.1:8080; open it to drop a photo)",
                f"python -m serve --model {pt}",
            ),
            ("Predict through the running server", f"python -m serve.predict {image} --top-k 3"),
            ("Predict in-process (torch + Pillow only)", f"python -m serve.predict {image} --model {pt}"),
        ]
    if best or model_tar:
        target = P.quote(Path(best or model_tar).resolve())
        cmds.append(
            (
                "Evaluate it again (another split: split=valid; another dataset: data=folder data.root=…)",
                f"python -m dogbreed.evaluate ckpt={target}",
            )
        )
    if model_tar:
        cmds.append(
            (
                "Deploy model.tar.gz to a SageMaker endpoint",
                f"python -m launch.deploy deploy.model={P.quote(out)}",
            )
        )
    cmds.append(
        ("Look at every logged value in TensorBoard", f"tensorboard --logdir {P.quote(out / 'logs')}")
    )
    return cmds


def _lr_find_section(reports: Path) -> str | None:
    found = P.read_json(reports / "lr_find.json")
    plot = reports / "lr_find.png"
    if not found or not plot.is_file():
        return None
    text = (
        f"<p>Suggested learning rate <b>{found['suggestion']:.3g}</b> (steepest loss descent); "
        + (
            "this run trained with it."
            if found.get("applied")
            else f"use it with <code>{H.esc(found['override'])}</code>."
        )
        + "</p>"
        if found.get("suggestion") is not None
        else "<p>The finder could not suggest a learning rate (too few steps; see the plot).</p>"
    )
    return text + H.png_img(plot.read_bytes(), "loss against learning rate")


def _mlflow_section(trainer: pl.Trainer) -> str | None:
    from dogbreed.tracking import mlflow_loggers

    rows, cmds = [], []
    for logger in mlflow_loggers(trainer.loggers):
        uri = logger._tracking_uri or ""
        experiment = logger.experiment.get_experiment(logger.experiment_id)
        rows.append((uri, experiment.name, logger.experiment_id, logger.run_id))
        if not uri.startswith("arn:"):
            cmds.append(
                ("Browse it (needs the full mlflow package)", f"mlflow ui --backend-store-uri {P.quote(uri)}")
            )
    if not rows:
        return None
    return H.table(["Tracking URI", "Experiment", "Experiment id", "Run id"], rows) + P.commands_block(cmds)


NO_HISTORY = '<p class="muted">No per-epoch history: this run had no CSV logger (logger=default has one).</p>'


def _curves_section(results: bytes) -> str:
    return H.png_img(results, "training curves") + (
        '<p class="muted">Per epoch, from the CSV logger (logs/csv/metrics.csv); the same picture is '
        "reports/results.png.</p>"
    )


def build(
    cfg: DictConfig, metrics: dict[str, Any], objects: dict[str, Any], history: Epochs
) -> tuple[str, bytes]:
    """The page and results.png."""
    trainer: pl.Trainer = objects["trainer"]
    out = Path(cfg.paths.output_dir)
    reports = out / "reports"
    ckpt = trainer.checkpoint_callback
    monitor = getattr(ckpt, "monitor", None)
    best = metrics.get("best_epoch")  # the epoch whose checkpoint was tested (MetricLines names it)
    info = _run_info(cfg, objects)
    title = f"{info['backbone']} on {Path(info['data_root']).name}"
    results = to_png(curves_figure(history, best, f"{title} — {out.name}"))
    sections = [
        ("Headline", P.headline(metrics, best, monitor)),
        ("What happened", P.story(P.training_facts(history, metrics, info) + P.report_facts(reports))),
        ("Training curves", _curves_section(results) if history else NO_HISTORY),
    ]
    samples = training_samples(objects["datamodule"], n=int(cfg.get("report", {}).get("samples", 16)))
    if samples is not None:
        sections.append(
            (
                "Training images as the model saw them",
                H.png_img(to_png(samples_figure(samples)), "training samples")
                + f'<p class="muted">{H.esc(samples.how)}</p>',
            )
        )
    lr_section = _lr_find_section(reports)
    if lr_section:
        sections.append(("Learning-rate finder", lr_section))
    sections.append(("Reports", P.links(reports)))
    mlflow = _mlflow_section(trainer)
    if mlflow:
        sections.append(("MLflow", mlflow))
    sections += [
        (
            "Model",
            P.artifacts(
                {
                    "TorchScript (model.pt)": metrics.get("model_pt"),
                    "SageMaker archive (model.tar.gz)": metrics.get("model_tar"),
                    "best checkpoint": metrics.get("best_checkpoint"),
                }
            ),
        ),
        ("What to run next", P.commands_block(commands(cfg, metrics, objects))),
        (
            "Configuration",
            "<details><summary>the composed config (.hydra/config.yaml)</summary><pre>"
            + H.esc(OmegaConf.to_yaml(cfg))
            + "</pre></details>",
        ),
    ]
    subtitle = f"{out.resolve()} — read top to bottom: numbers, story, curves, samples, reports, next steps"
    return H.page(f"Run: {title}", sections, subtitle=subtitle), results


def write_run_page(cfg: DictConfig, metrics: dict[str, Any], objects: dict[str, Any]) -> Path | None:
    """Write reports/index.html and reports/results.png; return the page's path (None if it failed)."""
    if not cfg.get("report", {}).get("enabled", True):
        return None
    reports = Path(cfg.paths.output_dir) / "reports"
    try:
        csv = _metrics_csv(objects["trainer"])
        history = read_history(csv) if csv else []
        document, results = build(cfg, metrics, objects, history)
        if history:
            write_bytes(reports / RESULTS, results)
        return H.write_html_atomic(reports / INDEX, document)
    except Exception:  # noqa: BLE001 - the run succeeded; its page must not turn that into a failure
        log.exception("Could not write the run page %s", reports / INDEX)
        return None
