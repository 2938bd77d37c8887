"""Self-contained HTML reports (no CDN, opens offline): matplotlib figures inlined as base64 PNG."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dogbreed.atomic import write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;\
color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}\
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}.IssuesFound{color:#b00020;font-weight:600}.NoIssuesFound{color:#1b7f3b}.Error{color:#8a6d00;font-weight:600}
img.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}.muted{color:#666}
pre{background:#f6f8fa;padding:.5rem .7rem;overflow-x:auto;border-radius:4px;margin:.2rem 0 .8rem}\
code{background:#f6f8fa;padding:0 .2rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}\
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem;min-width:8rem}\
.card .value{font-size:1.5rem;font-weight:600}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def figure_label(name: str, width: int | None = None) -> str:
    """A class folder name as figures show it: ``'012.Border_collie'`` → ``'Border collie'``, cut to
    ``width`` characters, with ``$`` escaped so matplotlib draws the text as it is (two ``$`` would start
    mathtext, where ``_`` and ``^`` are markup and a stray one fails the whole figure)."""
    head, sep, tail = name.partition(".")
    label = (tail if sep and head.isdigit() else name).replace("_", " ")
    if width is not None and len(label) > width:
        label = label[: width - 1] + "…"
    return figure_text(label)


def figure_text(text: str) -> str:
    """``text`` (a path, a name) escaped so matplotlib draws it as it is, never as mathtext."""
    return str(text).replace("$", r"\$")


def figure_img(fig: Any, alt: str) -> str:
    """A matplotlib figure as an inline ``<img class="plot">`` (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def png_img(png: bytes, alt: str) -> str:
    """PNG bytes (e.g. a figure also saved as a file) as an inline ``<img class="plot">``."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], status_col: int | None = None) -> str:
    """An HTML table; cells are escaped; ``status_col`` cells get their value as CSS class."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{esc(cell)}"' if i == status_col else ""
            cells.append(f"<td{cls}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Iterable[tuple[str, Any]]) -> str:
    """Headline numbers as a row of cards: (label, value) pairs, value on top."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{esc(v)}</div><div class="muted">{esc(k)}</div></div>'
            for k, v in items
        )
        + "</div>"
    )


def rules_table(rules: Sequence[Any]) -> str:
    """The shared rule-result table (name, status, step, message, recommendation)."""
    return table(
        ["Rule", "Status", "Step", "Message", "Recommendation"],
        (
            [r.name, r.status, r.step if r.step is not None else "", r.message, r.recommendation]
            for r in rules
        ),
        status_col=1,
    )


def page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    """A full HTML document: ``sections`` are (heading, inner HTML) pairs."""
    parts = [f"<h2>{esc(h)}</h2>\n{body}" for h, body in sections]
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{sub}\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def write_html_atomic(path: str | Path, document: str) -> Path:
    return write_text(path, document)
