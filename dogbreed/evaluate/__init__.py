"""Evaluation report: what does the model get wrong?

``python -m dogbreed.evaluate ckpt=PATH [data=…] [split=test]`` (see ``dogbreed.evaluate.cli``), and at the
end of ``python -m dogbreed.train`` while ``evaluate.enabled=true``. From Python::

    from dogbreed.evaluate import evaluate
    report = evaluate("outputs/…/model/model.tar.gz", "data/dogImages/test", "reports/")
    report.metrics.most_confused[0]      # {'a': '…', 'b': '…', 'a_as_b': 5, 'b_as_a': 2, …}

The report: top-1/top-5 accuracy, per-class precision/recall/F1 with macro and weighted averages, the
confusion matrix (readable PNG block + full CSV), the most-confused class pairs, a top-loss image grid,
and calibration (ECE + reliability diagram), as ``evaluation.json`` and a self-contained ``evaluation.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dogbreed.config import instantiate
from dogbreed.evaluate.inference import (
    Predictions,
    cached_predictions,
    canonical_split,
    predict_split,
    split_dir,
)
from dogbreed.evaluate.metrics import Metrics, compute
from dogbreed.evaluate.report import Report, write_report
from dogbreed.predict import load_module

# The name this package exported for the library's artifact resolver before it moved to dogbreed.predict.
load_source = load_module

__all__ = [
    "EvalSettings",
    "Metrics",
    "Predictions",
    "Report",
    "compute",
    "evaluate",
    "evaluate_run",
    "load_module",
    "load_source",
    "predict_split",
    "settings_from",
    "split_dir",
    "write_report",
]


@dataclass
class EvalSettings:
    """The ``evaluate`` config group (``conf/evaluate/default.yaml``)."""

    enabled: bool = True
    split: str = "test"
    most_confused: int = 10
    top_losses: int = 16
    confusion_classes: int = 20
    calibration_bins: int = 15
    device: str = "auto"

    def __post_init__(self) -> None:
        self.split = canonical_split(self.split)
        for key in ("most_confused", "top_losses", "confusion_classes", "calibration_bins"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"evaluate.{key}={value!r} must be an integer >= 1")

    @property
    def report_name(self) -> str:
        """``evaluation`` for the test split, ``evaluation_<split>`` otherwise
        (so they never overwrite each other)."""
        return "evaluation" if self.split == "test" else f"evaluation_{self.split}"


def settings_from(node: Any) -> EvalSettings:
    """``cfg.evaluate`` → EvalSettings through its ``_target_``; a bad value raises its own error,
    unwrapped."""
    return instantiate(node)


def evaluate(
    model: nn.Module | str | Path,
    folder: str | Path,
    reports_dir: str | Path,
    settings: EvalSettings | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    datamodule: Any = None,
    label: str | None = None,
) -> Report:
    """Evaluate ``model`` (a BreedClassifier, or a path ``load_module`` reads) on the ImageFolder split
    ``folder`` and write the report into ``reports_dir``. A ``datamodule`` in the cached-features mode (frozen
    backbone) lets the run's own model be evaluated from those features instead of the images."""
    settings = settings or EvalSettings()
    label = label or (str(model) if isinstance(model, str | Path) else f"{type(model).__name__} (in memory)")
    module = load_module(model) if isinstance(model, str | Path) else model
    preds = cached_predictions(module, datamodule, settings.split) if datamodule is not None else None
    if preds is None:
        preds = predict_split(
            module, folder, batch_size=batch_size, num_workers=num_workers, device=settings.device
        )
    metrics = compute(
        preds.probs,
        preds.targets,
        preds.class_names,
        preds.paths,
        most_confused=settings.most_confused,
        num_top_losses=settings.top_losses,
        n_bins=settings.calibration_bins,
    )
    context = {"model": label, "folder": str(folder), "split": settings.split}
    return write_report(metrics, reports_dir, settings.report_name, context, settings.confusion_classes)


def evaluate_run(
    cfg: Any, model: nn.Module | str | Path, datamodule: Any, output_dir: str | Path, label: str | None = None
) -> Report:
    """The end-of-training report: ``cfg.evaluate`` settings, the run's data, ``output_dir/reports``.
    ``label`` names an in-memory model in the report (e.g. the checkpoint it was loaded from)."""
    settings = settings_from(cfg.evaluate)
    if settings.split not in datamodule.layout.splits:
        raise ValueError(f"evaluate.split={settings.split!r}: {datamodule.root} has no such split")
    return evaluate(
        model,
        datamodule.layout.splits[settings.split],
        Path(output_dir) / "reports",
        settings,
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        datamodule=datamodule,
        label=label,
    )
