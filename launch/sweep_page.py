"""One page per local sweep: ``<sweep dir>/reports/index.html`` (self-contained, opens offline).

The trials (state, objective, parameters, metrics, errors, each linked to its own run page), Optuna's
optimisation history and parameter importances (``optuna.importance``: how much of the objective's
variation each parameter explains), and the best trial with the command that retrains it. Written by
``launch.tune_local.run_local`` after ``best.yaml``/``trials.csv``; a failure is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dogbreed import html as H
from dogbreed.evaluate.plots import to_png

log = logging.getLogger("launch.tune")
METRICS = ("val_acc", "val_loss", "wall_time_s")


def _trial_page(trial: FrozenTrial, reports: Path) -> str | None:
    """The trial's run page, relative to the sweep's reports/ folder (None if it wrote none)."""
    out = trial.user_attrs.get("output_dir")
    if not out or not (Path(out) / "reports" / "index.html").is_file():
        return None
    return Path(os.path.relpath(Path(out).resolve() / "reports" / "index.html", reports.resolve())).as_posix()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def trials_table(study: optuna.Study, reports: Path) -> str:
    names = sorted({k for t in study.trials for k in t.params})
    head = ["#", "state", "objective", *names, *METRICS, "run page", "error"]
    rows = []
    for t in study.trials:
        link = _trial_page(t, reports)
        cells = [t.number, t.state.name, _fmt(t.value), *(_fmt(t.params.get(n)) for n in names)]
        cells += [_fmt(t.user_attrs.get(m)) for m in METRICS]
        rows.append(
            "<tr>"
            + "".join(f"<td>{H.esc(c)}</td>" for c in cells)
            + (f'<td><a href="{H.esc(link)}">trial {t.number}</a></td>' if link else "<td></td>")
            + f"<td>{H.esc(t.user_attrs.get('error', ''))}</td></tr>"
        )
    return (
        '<div style="overflow-x:auto"><table><thead><tr>'
        + "".join(f"<th>{H.esc(h)}</th>" for h in head)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _plot(plotter: Any, study: optuna.Study, alt: str) -> str | None:
    """An ``optuna.visualization.matplotlib`` plot, inlined (None when Optuna cannot draw it yet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        ax = plotter(study)
    except (ValueError, RuntimeError) as exc:  # e.g. fewer than 2 complete trials for importances
        log.info("Sweep page: no %s (%s)", alt, exc)
        return None
    fig = ax.figure if hasattr(ax, "figure") else ax.ravel()[0].figure
    png = to_png(fig)
    plt.close(fig)
    return H.png_img(png, alt)


def importances(study: optuna.Study) -> str:
    try:
        values = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        return f'<p class="muted">Not computed: {H.esc(exc)}</p>'
    table = H.table(["parameter", "importance"], [(k, f"{v:.3f}") for k, v in values.items()])
    plot = _plot(optuna.visualization.matplotlib.plot_param_importances, study, "parameter importances")
    note = (
        '<p class="muted">The share of the objective\'s variation each parameter explains across the '
        "completed trials (Optuna's default evaluator); with few trials, a rough guide.</p>"
    )
    return table + (plot or "") + note


def best_section(study: optuna.Study, summary: dict[str, Any], reports: Path) -> str:
    if "best_trial" not in summary:
        return '<p class="muted">No trial completed: see the errors in the table below.</p>'
    best = study.best_trial
    link = _trial_page(best, reports)
    folder = shlex.quote(str(Path(summary["best_yaml"]).resolve().parent))
    parts = [
        f"<p>Trial <b>{best.number}</b>: objective <b>{best.value:.4g}</b> with "
        f"<code>{H.esc(' '.join(best.user_attrs.get('overrides', [])))}</code>.</p>",
        f'<p><a href="{H.esc(link)}">Its run page</a> (a probe: no export or evaluation).</p>'
        if link
        else "",
        '<p class="muted">Train it for real (export, evaluation and all reports):</p>',
        f"<pre>python -m dogbreed.train --config-path {H.esc(folder)} --config-name best</pre>",
    ]
    return "".join(parts)


def write_sweep_page(study: optuna.Study, output_dir: str | Path, summary: dict[str, Any]) -> Path | None:
    """Write ``<output_dir>/reports/index.html``; print and return its path (None if it failed)."""
    reports = Path(output_dir) / "reports"
    try:
        counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in TrialState}
        cards = [
            ("trials", len(study.trials)),
            *((k, v) for k, v in counts.items() if v),
            ("best objective", _fmt(summary.get("best_value"))),
            ("direction", study.direction.name.lower()),
        ]
        headline = H.cards(cards)
        history = _plot(optuna.visualization.matplotlib.plot_optimization_history, study, "history")
        sections = [
            ("Headline", headline),
            ("Best trial", best_section(study, summary, reports)),
            ("Optimisation history", history or '<p class="muted">No completed trial yet.</p>'),
            ("Parameter importances", importances(study)),
            ("Trials", trials_table(study, reports)),
        ]
        document = H.page(
            f"Sweep: study {study.study_name}", sections, subtitle=str(Path(output_dir).resolve())
        )
        path = H.write_html_atomic(reports / "index.html", document)
    except Exception:  # noqa: BLE001 - the sweep's results are already written; the page is extra
        log.exception("Could not write the sweep page %s", reports / "index.html")
        return None
    print(f"Sweep report: {path}", flush=True)
    return path
