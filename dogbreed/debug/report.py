"""``reports/debugger.json`` (the shared rule shape plus series and findings) and a self-contained HTML
page."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dogbreed.debug.builtin_rules import DebuggerRule, Finding
from dogbreed.debug.stats import History
from dogbreed.html import esc, figure_img, page, rules_table, table, write_html_atomic
from dogbreed.rules import RuleResult, write_rules_report

MAX_FINDINGS = 500
MAX_LINES = 8


def _clean(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def report_data(
    rules: Sequence[DebuggerRule], findings: Sequence[Finding], history: History, **extra: Any
) -> dict[str, Any]:
    """Everything in debugger.json besides ``rules``: parameters, findings, loss series, extras."""
    return {
        "params": {r.name: {"action": r.action, **r.params} for r in rules},
        "findings": [{"rule": f.rule, "step": f.step, "message": f.message} for f in findings[:MAX_FINDINGS]],
        "findings_total": len(findings),
        "last_step": history.last_step,
        "series": {
            "train_loss": [[s, _clean(v)] for s, v in history.train_loss],
            "val_loss": [[s, _clean(v)] for s, v in history.val_loss],
        },
        **extra,
    }


def _loss_figure(history: History, results: Sequence[RuleResult], stopped: dict | None) -> Figure:
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for label, series, style in (("train", history.train_loss, "-"), ("validation", history.val_loss, "o-")):
        if series:
            steps, values = zip(*series, strict=True)
            ax.plot(
                steps,
                [v if math.isfinite(v) else np.nan for v in values],
                style,
                label=f"{label} loss",
                markersize=4,
            )
    for i, result in enumerate(r for r in results if r.status == "IssuesFound" and r.step is not None):
        ax.axvline(
            result.step,
            color=f"C{i + 2}",
            linestyle="--",
            linewidth=1,
            label=f"{result.name} (step {result.step})",
        )
    if stopped:
        ax.axvline(stopped["step"], color="red", linewidth=2, label=f"stopped by {stopped['rule']}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run stopped before its first loss point has none
        ax.legend(fontsize=8, loc="best")
    return fig


def _timeline_figure(
    rules: Sequence[DebuggerRule], findings: Sequence[Finding], stopped: dict | None, last_step: int | None
) -> Figure:
    names = [r.name for r in rules]
    fig = Figure(figsize=(10, 0.45 * len(names) + 1.2))
    ax = fig.subplots()
    for y, name in enumerate(names):
        steps = [f.step for f in findings if f.rule == name]
        if steps:
            ax.scatter(steps, [y] * len(steps), s=14, color="#b00020")
            ax.scatter(steps[:1], [y], s=80, facecolors="none", edgecolors="#b00020")
    if stopped:
        ax.axvline(stopped["step"], color="red", linewidth=2)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlim(-0.5, max(1, last_step or 1) + 0.5)
    ax.set_xlabel("optimizer step (dots: the rule's condition held; circle: first time)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _spread(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if n > k else list(range(n))


def _gradient_figures(history: History) -> list[tuple[Figure, str]]:
    names, steps, matrix = history.grad_norms()
    if not steps:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(matrix > 0, matrix, np.nan))
    heat = Figure(figsize=(10, min(12, 1.5 + 0.18 * len(names))))
    ax = heat.subplots()
    image = ax.imshow(logs, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xticks(_spread(len(steps), 10), [str(steps[i]) for i in _spread(len(steps), 10)])
    rows = _spread(len(names), 40)
    ax.set_yticks(rows, [names[i] for i in rows], fontsize=7)
    ax.set_xlabel("saved step (one column each)")
    heat.colorbar(image, ax=ax, label="log10 ‖gradient‖ (blank: zero or missing)")
    lines = Figure(figsize=(10, 4))
    ax = lines.subplots()
    for i in _spread(len(names), MAX_LINES):
        ax.plot(steps, np.where(matrix[i] > 0, matrix[i], np.nan), marker=".", label=names[i])
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("‖gradient‖ (L2)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return [(heat, "Gradient norm per layer (heatmap)"), (lines, "Gradient norm of selected layers")]


def render_html(
    title: str,
    results: Sequence[RuleResult],
    rules: Sequence[DebuggerRule],
    findings: Sequence[Finding],
    history: History,
    stopped: dict | None,
    subtitle: str,
) -> str:
    """The report page: rules, loss with rule markers, rule timeline, gradient norms, parameters, findings."""
    issues = [r.name for r in results if r.status == "IssuesFound"]
    summary = (
        f"<p><b>{len(issues)}</b> of {len(results)} rules found "
        f"issues{': ' + esc(', '.join(issues)) if issues else ''}."
    )
    if stopped:
        summary += (
            f" Training was <b>stopped</b> at step {esc(stopped['step'])} by {esc(stopped['rule'])} "
            "(action: stop)."
        )
    sections = [("Rules", summary + "</p>" + rules_table(results))]
    sections.append(
        (
            "Train vs validation loss",
            figure_img(_loss_figure(history, results, stopped), "train and validation loss over steps"),
        )
    )
    sections.append(
        (
            "Which rule fired when",
            figure_img(
                _timeline_figure(rules, findings, stopped, history.last_step), "rule findings over steps"
            ),
        )
    )
    gradient_figures = _gradient_figures(history)
    sections.append(
        (
            "Gradient norms per layer",
            "".join(figure_img(fig, alt) for fig, alt in gradient_figures)
            or '<p class="muted">No gradients were recorded.</p>',
        )
    )
    params = table(
        ["Rule", "Action", "Parameters"],
        ([r.name, r.action, ", ".join(f"{k}={v}" for k, v in r.params.items())] for r in rules),
    )
    sections.append(("Rule parameters", params))
    shown = findings[:MAX_FINDINGS]
    more = (
        f'<p class="muted">{len(findings) - len(shown)} more in debugger.json.</p>'
        if len(findings) > len(shown)
        else ""
    )
    sections.append(
        (
            "Findings",
            (
                table(["Step", "Rule", "Message"], ([f.step, f.rule, f.message] for f in shown))
                if shown
                else "<p>None.</p>"
            )
            + more,
        )
    )
    return page(title, sections, subtitle)


def write_report(
    reports_dir: str | Path,
    results: Sequence[RuleResult],
    rules: Sequence[DebuggerRule],
    findings: Sequence[Finding],
    history: History,
    html: bool = True,
    subtitle: str = "",
    **extra: Any,
) -> dict[str, Path]:
    """Write debugger.json (always) and debugger.html (when ``html``) atomically; returns their paths."""
    reports_dir = Path(reports_dir)
    paths = {
        "json": write_rules_report(
            reports_dir / "debugger.json", list(results), **report_data(rules, findings, history, **extra)
        )
    }
    if html:
        document = render_html(
            "Debugger report", results, rules, findings, history, extra.get("stopped"), subtitle
        )
        paths["html"] = write_html_atomic(reports_dir / "debugger.html", document)
    return paths
