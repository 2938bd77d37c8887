"""``reports/profiler.json`` and the self-contained ``reports/profiler.html`` (plots inlined, no CDN).

The JSON keeps every step and the system series thinned to at most ``MAX_POINTS`` samples; the HTML
is what a user reads instead of SageMaker's profiler report: summary, findings, utilisation over time,
step times with outliers, data wait vs compute, top operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed import html
from dogbreed.profiler import advice
from dogbreed.profiler.judge import DATA_BOUND_SHARE
from dogbreed.profiler.plots import render_html
from dogbreed.profiler.timeline import ProfileData
from dogbreed.rules import RuleResult, write_rules_report

MAX_POINTS = 2000
COMPUTE_BOUND_SHARE = 10.0  # % of step time waiting for data below which a run counts as compute-bound


def _q(values: np.ndarray, q: float, scale: float = 1.0) -> float | None:
    values = values[~np.isnan(values)] if values.size else values
    return round(float(np.quantile(values, q)) / scale, 3) if values.size else None


def _max(values: np.ndarray, scale: float = 1.0) -> float | None:
    return _q(values, 1.0, scale)


def summarize(data: ProfileData, results: Sequence[RuleResult]) -> dict[str, Any]:
    """Job-level numbers and a verdict: what bounds this run, and the first things to try."""
    s, sys, ctx = data.steps.arrays(), data.system, data.context
    judged = ~s["profiled"]
    busy = float(s["total"][judged].sum())
    wait_share = 100.0 * float(s["wait"][judged].sum()) / busy if busy > 0 else None
    samples = int(s["batch_size"][judged].sum())
    if wait_share is None:
        bottleneck, tips = "unknown (no training step ran)", []
    elif wait_share >= DATA_BOUND_SHARE:
        bottleneck = "data loading"
        tips = [advice.more_workers(ctx, io_bound=True), advice.feature_cache(ctx), advice.pin_memory(ctx)]
    elif wait_share < COMPUTE_BOUND_SHARE:
        bottleneck = "compute"
        tips = [advice.feature_cache(ctx), advice.bf16(ctx)]
        if ctx.device == "cuda":
            tips.append(advice.bigger_batch(ctx))
    else:
        bottleneck = "mixed (data loading and compute)"
        tips = [advice.more_workers(ctx), advice.feature_cache(ctx), advice.bf16(ctx)]
    cpu = sys.array("cpu_cores").mean(axis=1) if len(sys) else np.zeros(0)
    first_step = data.steps.wait_start[0] if len(data.steps) else None
    out: dict[str, Any] = {
        "device": ctx.device,
        "cores": ctx.cores,
        "gpus": sys.gpu_names,
        "gpu_metrics_source": sys.gpu_source,
        "wall_time_s": round(data.fit_end - data.job_start, 2),
        "fit_time_s": round(data.fit_end - data.fit_start, 2),
        "initialization_s": None if first_step is None else round(first_step - data.job_start, 2),
        "training_loop_s": round(data.steps.end[-1] - first_step, 2) if first_step is not None else 0.0,
        "steps": int(judged.sum()),
        "profiled_steps": int(s["profiled"].sum()),
        "epochs": len(set(data.steps.epoch)),
        "samples": samples,
        "throughput_samples_per_s": round(samples / busy, 2) if busy > 0 else None,
        "steps_per_s": round(int(judged.sum()) / busy, 3) if busy > 0 else None,
        "step_ms_p50": _q(s["total"][judged], 0.5, 1e-3),
        "step_ms_p95": _q(s["total"][judged], 0.95, 1e-3),
        "step_ms_max": _max(s["total"][judged], 1e-3),
        "data_wait_ms_p50": _q(s["wait"][judged], 0.5, 1e-3),
        "data_wait_share_pct": None if wait_share is None else round(wait_share, 1),
        "compute_share_pct": None if wait_share is None else round(100.0 - wait_share, 1),
        "cpu_util_p50": _q(cpu, 0.5),
        "cpu_util_p95": _q(cpu, 0.95),
        "process_rss_max_mb": _max(sys.array("proc_rss"), 2**20),
        "system_memory_max_pct": _max(sys.array("mem_used_pct")),
        "system_samples": len(sys),
        "profiler_overhead_pct": profiler_overhead_pct(data),
        "bottleneck": bottleneck,
        "advice": [t for t in tips if t],
        "issues": [r.name for r in results if r.status == "IssuesFound"],
    }
    if sys.has_gpu:
        out["gpu_util_p50"] = _q(sys.array("gpu_util").ravel(), 0.5)
        out["gpu_util_p95"] = _q(sys.array("gpu_util").ravel(), 0.95)
        out["gpu_memory_max_pct"] = _max(sys.array("gpu_mem_pct").ravel())
    return out


def profiler_overhead_pct(data: ProfileData) -> float | None:
    """The profiler's own cost in % of the training: the share of a core its sampler thread used plus the
    share of the training loop spent in its step hooks. An upper bound on the slowdown it causes (the
    sampler may as well have run on an otherwise idle core); torch.profiler steps are not included."""
    o = data.overhead
    if not o or not len(data.steps) or not o.get("sampler_wall_s"):
        return None
    loop = data.steps.end[-1] - data.steps.wait_start[0]
    hooks = o.get("hooks_s", 0.0) / loop if loop > 0 else 0.0
    return round(100.0 * (o.get("sampler_cpu_s", 0.0) / o["sampler_wall_s"] + hooks), 3)


def _thin(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, int(np.ceil(n / MAX_POINTS))))


def _rounded(values: np.ndarray, digits: int = 2) -> list[Any]:
    return [None if np.isnan(v) else round(float(v), digits) for v in np.asarray(values, dtype=float).ravel()]


def series_json(data: ProfileData) -> dict[str, Any]:
    sys, t0 = data.system, data.fit_start
    idx = _thin(len(sys))
    cores = sys.array("cpu_cores")[idx]
    out: dict[str, Any] = {
        "interval_s": sys.interval_s,
        "t": _rounded(sys.array("t")[idx] - t0, 3),
        "cpu_total": _rounded(cores.mean(axis=1) if cores.size else np.zeros(0)),
        "cpu_core_min": _rounded(cores.min(axis=1) if cores.size else np.zeros(0)),
        "cpu_core_max": _rounded(cores.max(axis=1) if cores.size else np.zeros(0)),
    }
    for name, scale in (
        ("iowait", 1),
        ("proc_cpu", 1),
        ("mem_used_pct", 1),
        ("proc_rss", 2**20),
        ("disk_read_bps", 1e6),
        ("disk_write_bps", 1e6),
        ("net_recv_bps", 1e6),
        ("net_sent_bps", 1e6),
    ):
        key = {"proc_rss": "proc_rss_mb"}.get(name, name.replace("_bps", "_mbps"))
        out[key] = _rounded(sys.array(name)[idx] / scale)
    if sys.has_gpu:
        for name in ("gpu_util", "gpu_mem_pct"):
            out[name] = [_rounded(col) for col in sys.array(name)[idx].T]
    return out


def steps_json(data: ProfileData) -> dict[str, Any]:
    s = data.steps.arrays()
    return {
        "step": s["step"].tolist(),
        "epoch": s["epoch"].tolist(),
        "t": _rounded(s["start"] - data.fit_start, 4),
        "wait_ms": _rounded(s["wait"] * 1e3, 3),
        "compute_ms": _rounded(s["compute"] * 1e3, 3),
        "batch_size": s["batch_size"].tolist(),
        "profiled": s["profiled"].tolist(),
    }


def epochs_table(data: ProfileData) -> list[dict[str, Any]]:
    s = data.steps.arrays()
    rows = []
    for epoch in sorted(set(s["epoch"].tolist())):
        m = (s["epoch"] == epoch) & ~s["profiled"]
        wait, compute = float(s["wait"][m].sum()), float(s["compute"][m].sum())
        share = 100 * wait / (wait + compute) if wait + compute > 0 else 0.0
        rows.append(
            {
                "epoch": epoch,
                "steps": int(m.sum()),
                "wait_s": round(wait, 3),
                "compute_s": round(compute, 3),
                "wait_share_pct": round(share, 1),
            }
        )
    return rows


def write_report(
    reports_dir: Path,
    data: ProfileData,
    results: list[RuleResult],
    parameters: dict[str, Any],
    html_report: bool = True,
) -> dict[str, Path]:
    """Write profiler.json (and profiler.html); returns their paths."""
    reports_dir = Path(reports_dir)
    summary = summarize(data, results)
    paths = {
        "json": write_rules_report(
            reports_dir / "profiler.json",
            results,
            summary=summary,
            epochs=epochs_table(data),
            top_operators=data.top_ops,
            profiler_cost=data.overhead,
            context=data.context.to_dict(),
            parameters=parameters,
            system=series_json(data),
            steps=steps_json(data),
        )
    }
    if html_report:
        paths["html"] = html.write_html_atomic(
            reports_dir / "profiler.html", render_html(data, results, summary, epochs_table(data), parameters)
        )
    return paths
