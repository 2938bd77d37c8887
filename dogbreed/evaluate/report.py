"""Write the evaluation report: JSON, the full confusion matrix as CSV, PNGs,
and one self-contained HTML page.

Files (``NAME`` is ``evaluation`` for the test split, ``evaluation_<split>`` otherwise), all in one folder:
``NAME.json``, ``NAME.html`` (figures inlined, opens offline), ``NAME_confusion.csv``,
``NAME_confusion.png``, ``NAME_reliability.png``, ``NAME_top_losses.png``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogbreed import html as H
from dogbreed.atomic import write_bytes
from dogbreed.evaluate import plots
from dogbreed.evaluate.metrics import Metrics, block_classes


@dataclass
class Report:
    """Where the report went, and the numbers in it."""

    json: Path
    html: Path
    files: dict[str, Path]
    metrics: Metrics

    def headline(self) -> dict[str, Any]:
        """The few numbers ``train`` adds to ``metrics.json``."""
        m = self.metrics
        return {
            "eval_top1": m.top1,
            "eval_top5": m.top5,
            "eval_ece": m.calibration["ece"],
            "eval_macro_f1": m.macro["f1"],
            "evaluation_report": str(self.html),
        }


def confusion_csv(metrics: Metrics) -> bytes:
    """The full matrix: one row per true class, one column per predicted class, counts."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *metrics.class_names])
    for name, row in zip(metrics.class_names, metrics.confusion.tolist(), strict=True):
        writer.writerow([name, *row])
    return buf.getvalue().encode("utf-8")


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _summary(m: Metrics) -> str:
    rows = [
        ("Images", f"{m.num_images} ({m.errors} wrong)"),
        ("Classes", len(m.class_names)),
        ("Top-1 accuracy", _pct(m.top1)),
        (f"Top-{m.top_k} accuracy", _pct(m.top5)),
        ("Mean cross-entropy", f"{m.loss:.4f}"),
        ("Expected calibration error", f"{m.calibration['ece']:.4f}"),
        (
            "Macro precision / recall / F1",
            " / ".join(f"{m.macro[k]:.3f}" for k in ("precision", "recall", "f1")),
        ),
        (
            "Weighted precision / recall / F1",
            " / ".join(f"{m.weighted[k]:.3f}" for k in ("precision", "recall", "f1")),
        ),
    ]
    note = (
        '<p class="muted">Macro averages treat every class alike (a rare breed counts as much as a common '
        "one); weighted averages weight each class by its number of images. A macro F1 well below top-1 "
        "accuracy means a few classes fail badly.</p>"
    )
    return H.table(["Metric", "Value"], rows) + note


def _pairs(m: Metrics) -> str:
    if not m.most_confused:
        return "<p>No image was misclassified.</p>"
    rows = [
        (i + 1, p["a"], p["b"], p["a_as_b"], p["b_as_a"], p["count"], _pct(p["share"]))
        for i, p in enumerate(m.most_confused)
    ]
    note = (
        '<p class="muted">Pairs of classes the model mixes up, both directions added. “A as B” counts '
        "images of A predicted as B. Pairs near the top are where more data, cleaner labels or a closer "
        "look help most.</p>"
    )
    return note + H.table(
        ["#", "Class A", "Class B", "A as B", "B as A", "Errors", "Share of the pair's images"], rows
    )


def _top_losses(m: Metrics, png: bytes) -> str:
    rows = [
        (
            i + 1,
            "/".join(Path(t["path"]).parts[-2:]),
            t["true"],
            t["predicted"],
            f"{t['p_predicted']:.3f}",
            f"{t['p_true']:.3f}",
            f"{t['loss']:.3f}",
        )
        for i, t in enumerate(m.top_losses)
    ]
    note = (
        '<p class="muted">The images the model was most wrong about (highest cross-entropy), worst first. '
        "Confident mistakes often reveal mislabelled images or look-alike classes; red titles are errors.</p>"
    )
    return (
        note
        + H.png_img(png, "top-loss images")
        + H.table(["#", "File", "True", "Predicted", "p(predicted)", "p(true)", "Loss"], rows)
    )


def _calibration(m: Metrics, png: bytes) -> str:
    cal = m.calibration
    gap = cal["mean_confidence"] - m.top1
    verdict = (
        "over-confident"
        if gap > 0.02
        else "under-confident"
        if gap < -0.02
        else "about as confident as it is accurate"
    )
    note = (
        f"<p>Mean confidence {cal['mean_confidence']:.3f} against top-1 accuracy {m.top1:.3f}: the model is "
        f"<b>{H.esc(verdict)}</b>. Expected calibration error {cal['ece']:.4f} is the average gap between "
        "confidence and accuracy over the bins, weighted by their images; 0 is perfect. Bars below the "
        "diagonal mean over-confidence.</p>"
    )
    return note + H.png_img(png, "reliability diagram")


def _per_class(m: Metrics) -> str:
    rows = sorted(m.per_class, key=lambda r: (r["f1"], r["class"]))
    return H.table(
        ["Class", "Precision", "Recall", "F1", "Images", "Predicted", "Most often taken for"],
        (
            (
                r["class"],
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                f"{r['f1']:.3f}",
                r["support"],
                r["predicted"],
                f"{r['confused_with']} ({r['confused_count']})" if r["confused_with"] else "",
            )
            for r in rows
        ),
    )


def write_report(
    metrics: Metrics, reports_dir: str | Path, name: str, context: dict[str, Any], confusion_classes: int = 20
) -> Report:
    """Write every file of the report into ``reports_dir``;
    ``context`` (model, data, split) goes into the JSON."""
    reports_dir = Path(reports_dir)
    classes = block_classes(metrics.confusion, metrics.most_confused, metrics.class_names, confusion_classes)
    pngs = {
        "confusion_png": plots.to_png(
            plots.confusion_figure(metrics.confusion, metrics.class_names, classes)
        ),
        "reliability_png": plots.to_png(plots.reliability_figure(metrics.calibration)),
        "top_losses_png": plots.to_png(plots.top_losses_figure(metrics.top_losses), tight=False),
    }
    files = {key: write_bytes(reports_dir / f"{name}_{key[:-4]}.png", data) for key, data in pngs.items()}
    files["confusion_csv"] = write_bytes(reports_dir / f"{name}_confusion.csv", confusion_csv(metrics))
    html_path, json_path = reports_dir / f"{name}.html", reports_dir / f"{name}.json"
    csv_link = f'<a href="{H.esc(files["confusion_csv"].name)}">{H.esc(files["confusion_csv"].name)}</a>'
    shown = (
        "all classes"
        if len(classes) == len(metrics.class_names)
        else f"the {len(classes)} classes with the most confusion"
    )
    sections = [
        ("Summary", _summary(metrics)),
        ("Most-confused pairs", _pairs(metrics)),
        (
            "Confusion matrix",
            f'<p class="muted">Rows are true classes, columns predictions; showing {shown}. '
            f"The full matrix is in {csv_link} (rows true, columns predicted).</p>"
            + H.png_img(pngs["confusion_png"], "confusion matrix"),
        ),
        ("Top losses", _top_losses(metrics, pngs["top_losses_png"])),
        ("Calibration", _calibration(metrics, pngs["reliability_png"])),
        ("Per-class metrics (worst F1 first)", _per_class(metrics)),
    ]
    subtitle = f"{context.get('model', '')} on {context.get('folder', '')} (split {context.get('split', '')})"
    files["html"] = H.write_html_atomic(html_path, H.page("Evaluation report", sections, subtitle=subtitle))
    document = {**context, **metrics.to_dict(), "files": {k: p.name for k, p in sorted(files.items())}}
    files["json"] = write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    return Report(json=json_path, html=html_path, files=files, metrics=metrics)
