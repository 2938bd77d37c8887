"""The profiler's HTML page: figures (matplotlib's object API, no GUI backend) and tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dogbreed import html
from dogbreed.profiler.timeline import ProfileData
from dogbreed.rules import RuleResult

WAIT_COLOR, COMPUTE_COLOR, OUTLIER_COLOR = "#e07b39", "#3b75af", "#c0392b"
SUMMARY_ROWS = (
    ("bottleneck", "Bottleneck", ""),
    ("device", "Device", ""),
    ("cores", "CPU cores", ""),
    ("gpus", "GPUs", ""),
    ("wall_time_s", "Job start to end of fit", "s"),
    ("initialization_s", "Initialisation (job start to first step)", "s"),
    ("training_loop_s", "Training loop (incl. validation)", "s"),
    ("epochs", "Epochs", ""),
    ("steps", "Steps timed (profiled steps excluded)", ""),
    ("samples", "Samples", ""),
    ("throughput_samples_per_s", "Throughput through the training loop", "samples/s"),
    ("step_ms_p50", "Step time p50", "ms"),
    ("step_ms_p95", "Step time p95", "ms"),
    ("step_ms_max", "Step time max", "ms"),
    ("data_wait_share_pct", "Data wait share of step time", "%"),
    ("compute_share_pct", "Compute share of step time", "%"),
    ("cpu_util_p50", "CPU utilisation p50 (all cores)", "%"),
    ("cpu_util_p95", "CPU utilisation p95 (all cores)", "%"),
    ("gpu_util_p50", "GPU utilisation p50", "%"),
    ("gpu_util_p95", "GPU utilisation p95", "%"),
    ("gpu_memory_max_pct", "GPU memory max", "%"),
    ("process_rss_max_mb", "Training processes RSS max", "MB"),
    ("system_memory_max_pct", "System memory max", "%"),
    ("system_samples", "System samples", ""),
    ("profiler_overhead_pct", "Profiler's own cost (sampler CPU + step hooks) of the training loop", "%"),
)


def _train_spans(data: ProfileData) -> list[tuple[float, float]]:
    """(start, end) of each epoch's training loop, seconds since fit start."""
    s = data.steps.arrays()
    spans = []
    for epoch in sorted(set(s["epoch"].tolist())):
        m = s["epoch"] == epoch
        spans.append(
            (float(s["wait_start"][m].min() - data.fit_start), float(s["end"][m].max() - data.fit_start))
        )
    return spans


def utilisation_figure(data: ProfileData) -> Figure:
    sys = data.system
    t = sys.array("t") - data.fit_start
    rows = 4 if sys.has_gpu else 3
    fig = Figure(figsize=(11, 2.3 * rows))
    axes = fig.subplots(rows, 1, sharex=True)
    cores = sys.array("cpu_cores")
    ax = axes[0]
    if len(t):
        ax.fill_between(
            t, cores.min(axis=1), cores.max(axis=1), color="#9ecae1", alpha=0.5, label="per-core range"
        )
        ax.plot(t, cores.mean(axis=1), color="#08519c", label="all cores")
        ax.plot(
            t,
            sys.array("proc_cpu") / sys.cores,
            color="#31a354",
            ls="--",
            label="training processes (share of all cores)",
        )
        ax.plot(t, sys.array("iowait"), color="#756bb1", ls=":", label="I/O wait")
    ax.set_ylabel("CPU %")
    ax.set_ylim(0, 105)
    ax = axes[1]
    ax.plot(t, sys.array("mem_used_pct"), color="#636363", label="system memory %")
    ax.set_ylabel("memory %")
    twin = ax.twinx()
    twin.plot(t, sys.array("proc_rss") / 2**30, color="#e6550d", label="training RSS (GiB)")
    twin.set_ylabel("GiB")
    twin.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if sys.has_gpu:
        ax = axes[2]
        for g, name in enumerate(sys.gpu_names):
            ax.plot(t, sys.array("gpu_util")[:, g], label=f"{name} utilisation %")
            ax.plot(t, sys.array("gpu_mem_pct")[:, g], ls="--", label=f"{name} memory %")
        ax.set_ylabel("GPU %")
        ax.set_ylim(0, 105)
    ax = axes[-1]
    for name, label in (
        ("disk_read_bps", "disk read"),
        ("disk_write_bps", "disk write"),
        ("net_recv_bps", "network in"),
        ("net_sent_bps", "network out"),
    ):
        ax.plot(t, sys.array(name) / 1e6, label=label)
    ax.set_ylabel("MB/s")
    ax.set_xlabel("seconds since fit() started")
    for i, ax in enumerate(axes):
        for j, (a, b) in enumerate(_train_spans(data)):
            ax.axvspan(
                a, b, color="#a1d99b", alpha=0.25, lw=0, label="training loop" if i == 0 and j == 0 else None
            )
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncol=5, frameon=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def steps_figure(data: ProfileData, stddev: float) -> Figure:
    s = data.steps.arrays()
    judged = ~s["profiled"]
    judged[:1] = False
    total_ms, wait_ms = s["total"] * 1e3, s["wait"] * 1e3
    threshold = total_ms[judged].mean() + stddev * total_ms[judged].std() if judged.any() else np.nan
    fig = Figure(figsize=(11, 3.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    left.plot(s["step"], total_ms, ".", ms=3, color=COMPUTE_COLOR, label="step time")
    left.plot(s["step"], wait_ms, ".", ms=3, color=WAIT_COLOR, label="of which data wait")
    out = judged & (total_ms > threshold)
    left.plot(
        s["step"][out], total_ms[out], "x", ms=8, color=OUTLIER_COLOR, label=f"outlier (> mean + {stddev}σ)"
    )
    if s["profiled"].any():
        left.plot(
            s["step"][s["profiled"]],
            total_ms[s["profiled"]],
            "s",
            ms=4,
            mfc="none",
            color="#777",
            label="torch.profiler steps",
        )
    if np.isfinite(threshold):
        left.axhline(threshold, color=OUTLIER_COLOR, ls="--", lw=1)
    left.set_xlabel("step")
    left.set_ylabel("ms")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    if judged.any():
        right.hist(total_ms[judged], bins=40, color=COMPUTE_COLOR, alpha=0.8)
        if np.isfinite(threshold):
            right.axvline(threshold, color=OUTLIER_COLOR, ls="--", lw=1)
    right.set_xlabel("step time (ms)")
    right.set_ylabel("steps")
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def share_figure(epochs: Sequence[dict[str, Any]]) -> Figure:
    labels = [f"epoch {e['epoch']}" for e in epochs]
    wait = [e["wait_share_pct"] for e in epochs]
    total_wait, total_compute = sum(e["wait_s"] for e in epochs), sum(e["compute_s"] for e in epochs)
    labels.append("all")
    wait.append(100 * total_wait / (total_wait + total_compute) if total_wait + total_compute > 0 else 0.0)
    compute = [100 - w for w in wait]
    fig = Figure(figsize=(11, 0.45 * len(labels) + 1.1))
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, wait, color=WAIT_COLOR, label="waiting for data")
    ax.barh(y, compute, left=wait, color=COMPUTE_COLOR, label="compute (forward, backward, optimizer)")
    for yi, w in zip(y, wait, strict=True):
        ax.text(1, yi, f"{w:.0f}% wait", va="center", fontsize=8, color="white" if w > 8 else "black")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of step time")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _fmt(value: Any, unit: str) -> str:
    if value is None or value == []:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:.4g} {unit}".strip() if isinstance(value, int | float) else f"{value} {unit}".strip()


def render_html(
    data: ProfileData,
    results: Sequence[RuleResult],
    summary: dict[str, Any],
    epochs: Sequence[dict[str, Any]],
    parameters: dict[str, Any],
) -> str:
    """The full profiler page."""
    rules_params = parameters.get("rules") or {}
    stddev = float((rules_params.get("StepOutlier") or {}).get("stddev", 3))
    issues = summary["issues"]
    verdict = f"<p><b>Bottleneck: {html.esc(summary['bottleneck'])}.</b> "
    verdict += (
        f"Rules with findings: {html.esc(', '.join(issues))}.</p>"
        if issues
        else "No rule found an issue.</p>"
    )
    if summary["advice"]:
        verdict += (
            "<p>First things to try:</p><ul>"
            + "".join(f"<li>{html.esc(a)}</li>" for a in summary["advice"])
            + "</ul>"
        )
    rows = [(label, _fmt(summary.get(key), unit)) for key, label, unit in SUMMARY_ROWS if key in summary]
    sections = [
        ("Job summary", verdict + html.table(["", "value"], rows)),
        ("Rules", html.rules_table(results)),
    ]
    if len(data.system):
        sections.append(
            (
                "Utilisation over time",
                html.figure_img(utilisation_figure(data), "System utilisation over time"),
            )
        )
    if len(data.steps):
        sections.append(
            ("Step time and outliers", html.figure_img(steps_figure(data, stddev), "Step times and outliers"))
        )
        share = html.figure_img(share_figure(epochs), "Data wait versus compute per epoch")
        table = html.table(
            ["epoch", "steps", "data wait (s)", "compute (s)", "wait share (%)"],
            ([e["epoch"], e["steps"], e["wait_s"], e["compute_s"], e["wait_share_pct"]] for e in epochs),
        )
        sections.append(("Data wait vs compute", share + table))
    if data.top_ops:
        ops = html.table(
            ["operator", "calls", "self CPU (ms)", "CPU total (ms)", "self device (ms)"],
            (
                [
                    o["name"],
                    o["calls"],
                    f"{o['self_cpu_ms']:.2f}",
                    f"{o['cpu_total_ms']:.2f}",
                    f"{o['self_device_ms']:.2f}",
                ]
                for o in data.top_ops
            ),
        )
        sections.append(("Top operators (torch.profiler)", ops))
    else:
        sections.append(
            (
                "Top operators (torch.profiler)",
                '<p class="muted">torch.profiler did not run: set '
                "callbacks.profiler.framework_profile.num_steps=3 (and start_step) to record some steps.</p>",
            )
        )
    ctx_rows = [(k, "unknown" if v is None else v) for k, v in sorted(data.context.to_dict().items())]
    param_rows = [
        (name, "off" if p is None else ", ".join(f"{k}={v}" for k, v in p.items()) or "(none)")
        for name, p in rules_params.items()
    ]
    settings = html.table(["run setting", "value"], ctx_rows) + html.table(["rule", "parameters"], param_rows)
    sections.append(("Run settings and rule parameters", settings))
    subtitle = (
        f"{summary['steps']} steps, {summary['epochs']} epoch(s) on {summary['device']}; sampled every "
        f"{parameters.get('system_monitor_interval_millis', 0):g} ms"
    )
    return html.page("Profiler report", sections, subtitle)
