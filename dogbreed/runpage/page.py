"""The sections of ``reports/index.html``: what happened, why, and what to run next.

Everything comes from what the run left behind (metrics, the CSV history, the other reports' JSON, the
composed config); this module only arranges it. Commands are built from this run's own paths.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbreed import html as H
from dogbreed.runpage.history import Epochs

REPORTS = (
    ("evaluation.html", "Evaluation", "test-set accuracy, most-confused pairs, confusion matrix, top losses"),
    (
        "debugger.html",
        "Debugger",
        "is the model learning? SageMaker Debugger's rules over losses and gradients",
    ),
    ("profiler.html", "Profiler", "why is training slow? system use, step time, SageMaker's profiler rules"),
)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.4g}"
    return str(value)


def headline(metrics: dict[str, Any], best: int | None, monitor: str | None) -> str:
    """The numbers first, as cards: test accuracy leads."""
    cards = [
        ("test accuracy", _fmt(metrics.get("test_acc"), pct=True)),
        ("test top-5", _fmt(metrics.get("test_acc_top5"), pct=True)),
        (
            f"best {monitor or 'val_acc'}" + (f" (epoch {best})" if best is not None else ""),
            _fmt(metrics.get(monitor or "val_acc"), pct=(monitor or "val_acc").endswith("acc")),
        ),
        ("test loss", _fmt(metrics.get("test_loss"))),
        ("macro F1", _fmt(metrics.get("eval_macro_f1"))),
        ("calibration error", _fmt(metrics.get("eval_ece"))),
        ("epochs", _fmt(metrics.get("epochs"))),
        ("wall time", f"{metrics['wall_time_s']:.0f} s" if metrics.get("wall_time_s") else "—"),
    ]
    return H.cards(cards)


def story(facts: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{fact}</li>" for fact in facts) + "</ul>"


def training_facts(history: Epochs, metrics: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """Plain sentences about the fit: length, why it stopped, best epoch, train/validation gap."""
    facts = []
    weights = info["weights"] if info["pretrained"] else "RANDOM INITIALISATION (no pretrained weights found)"
    facts.append(
        f"{H.esc(info['backbone'])} ({H.esc(weights)}), backbone {H.esc(info['freeze'])}, "
        f"{info['classes']} classes from <code>{H.esc(info['data_root'])}</code>; "
        f"precision {H.esc(info['precision'])} on {H.esc(info['device'])}."
    )
    if info.get("stopped_early"):
        facts.append(
            f"Stopped early after epoch {info['stopped_early']}: {H.esc(info['early_monitor'])} had not "
            f"improved for {info['patience']} epochs (callbacks.early_stopping)."
        )
    else:
        facts.append(f"Trained {metrics.get('epochs')} of trainer.max_epochs={info['max_epochs']} epochs.")
    if history:
        first, last = history[0], history[-1]
        if "val_acc" in first and "val_acc" in last:
            facts.append(
                f"Validation accuracy went from {first['val_acc']:.1%} after the first epoch to "
                f"{last['val_acc']:.1%} after the last."
            )
        if "train_acc" in last and "val_acc" in last and last["train_acc"] - last["val_acc"] > 0.05:
            facts.append(
                f"In the last epoch the model scored {last['train_acc']:.1%} on the training images and "
                f"{last['val_acc']:.1%} on validation: it fits images it has seen better than new ones."
            )
    return facts


def report_facts(reports: Path) -> list[str]:
    """One line from each of the other reports that found something."""
    facts = []
    evaluation = read_json(reports / "evaluation.json")
    if evaluation and evaluation.get("most_confused"):
        pair = evaluation["most_confused"][0]
        facts.append(
            f"Most confused on the {H.esc(evaluation.get('split', 'test'))} split: "
            f"<b>{H.esc(pair['a'])}</b> and <b>{H.esc(pair['b'])}</b>: {pair['a_as_b']} images of the first "
            f"predicted as the second, {pair['b_as_a']} the other way round ({pair['share']:.0%} of all "
            "mistakes; the evaluation report shows them)."
        )
    for name in ("debugger", "profiler"):
        data = read_json(reports / f"{name}.json")
        if not data:
            continue
        found = [r for r in data.get("rules", []) if r.get("status") == "IssuesFound"]
        if found:
            facts.append(
                f"{name.capitalize()}: "
                + "; ".join(f"<b>{H.esc(r['name'])}</b> — {H.esc(r.get('message', ''))}" for r in found)
            )
        else:
            facts.append(f"{name.capitalize()}: no rule found issues.")
    return facts


def links(reports: Path) -> str:
    """The reports that exist, as relative links (the folder can be moved or mailed whole)."""
    rows = [
        f'<li><a href="{H.esc(file)}">{H.esc(title)}</a> <span class="muted">— {H.esc(what)}</span></li>'
        for file, title, what in REPORTS
        if (reports / file).is_file()
    ]
    return "<ul>" + "".join(rows) + "</ul>" if rows else '<p class="muted">No other reports were written.</p>'


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def artifacts(paths: dict[str, str | None]) -> str:
    rows = [
        (label, str(Path(p).resolve()), _size(Path(p)))
        for label, p in paths.items()
        if p and Path(p).is_file()
    ]
    if not rows:
        return '<p class="muted">No model was exported (export.enabled=false or a debug run).</p>'
    return H.table(["What", "Path", "Size"], rows)


def commands_block(commands: Sequence[tuple[str, str]]) -> str:
    return "".join(
        f'<p class="muted">{H.esc(what)}</p><pre>{H.esc(cmd)}</pre>' for what, cmd in commands if cmd
    )


def quote(path: str | Path) -> str:
    return shlex.quote(str(path))
