"""Profiler rules on synthetic timelines: each rule fires on the pattern it names, and only then."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dogbreed.profiler import builtin_rules as rules_mod
from dogbreed.profiler.builtin_rules import RULE_DEFAULTS, resolve_params, run_profiler_rules
from dogbreed.profiler.sampler import SystemSeries
from dogbreed.profiler.timeline import ProfileData, RunContext, StepTimeline, covered, sample_phases

GPU_RULES = ("LowGPUUtilization", "BatchSize", "GPUMemoryIncrease")
# SageMaker's documented defaults ("Profiler built-in rules"); Dataloader.wait_threshold is ours.
SAGEMAKER_DEFAULTS = {
    "LowGPUUtilization": {"threshold_p95": 70, "threshold_p5": 10, "window": 500, "patience": 1000},
    "CPUBottleneck": {"threshold": 50, "gpu_threshold": 10, "cpu_threshold": 90, "patience": 1000},
    "IOBottleneck": {"threshold": 50, "gpu_threshold": 10, "io_threshold": 50, "patience": 1000},
    "BatchSize": {
        "cpu_threshold_p95": 70,
        "gpu_threshold_p95": 70,
        "gpu_memory_threshold_p95": 70,
        "patience": 1000,
        "window": 500,
    },
    "StepOutlier": {"stddev": 3, "mode": None, "n_outliers": 10},
    "Dataloader": {"min_threshold": 70, "max_threshold": 200, "patience": 10, "wait_threshold": 20},
    "GPUMemoryIncrease": {"increase": 5, "patience": 1000, "window": 10},
    "MaxInitializationTime": {"threshold": 20},
    "OverallSystemUsage": {},
}


def synth(
    n_steps: int = 200,
    compute_s: float = 0.1,
    wait_s: float = 0.002,
    interval: float = 0.05,
    proc_cpu: float = 100.0,
    gpu_util=None,
    gpu_mem=20.0,
    cores: int = 2,
    slow_steps: dict[int, float] | None = None,
    init_s: float = 5.0,
    **ctx,
) -> ProfileData:
    """A run of ``n_steps`` steps and system samples every ``interval`` s. Sample columns are scalars or
    functions of the sample index array; ``gpu_util=None`` means no GPU."""
    fit_start = 100.0
    tl, t = StepTimeline(), fit_start + 1.0
    for i in range(n_steps):
        extra = (slow_steps or {}).get(i, 0.0)
        tl.step.append(i)
        tl.epoch.append(0)
        tl.wait_start.append(t)
        tl.start.append(t + wait_s)
        tl.end.append(t + wait_s + compute_s + extra)
        tl.batch_size.append(32)
        tl.profiled.append(False)
        t = tl.end[-1]
    times = np.arange(fit_start + interval, t + interval, interval)
    gpus = [] if gpu_util is None else ["gpu0"]
    sys = SystemSeries(interval, cores, gpus, "nvml" if gpus else None)
    n = len(times)
    sys.t = times.tolist()
    sys.cpu_cores = [[50.0] * cores for _ in range(n)]
    sys.iowait = [0.0] * n
    sys.proc_cpu = col(proc_cpu, n).tolist()
    sys.proc_rss = [1e9] * n
    sys.mem_used_pct = [40.0] * n
    for name in ("disk_read_bps", "disk_write_bps", "net_recv_bps", "net_sent_bps"):
        setattr(sys, name, [0.0] * n)
    if gpus:
        sys.gpu_util = col(gpu_util, n).reshape(n, 1).tolist()
        sys.gpu_mem_pct = col(gpu_mem, n).reshape(n, 1).tolist()
        sys.gpu_mem_used = (col(gpu_mem, n) * 1e8).reshape(n, 1).tolist()
    context = RunContext(
        **{"cores": cores, "device": "cuda" if gpus else "cpu", "num_workers": 0, "batch_size": 32, **ctx}
    )
    return ProfileData(sys, tl, context, job_start=fit_start - init_s, fit_start=fit_start, fit_end=t + 0.5)


def col(value, n: int) -> np.ndarray:
    idx = np.arange(n)
    return np.asarray(value(idx) if callable(value) else np.full(n, value), dtype=float)


def by_name(data: ProfileData, params=None, **kw) -> dict:
    return {r.name: r for r in run_profiler_rules(data, params, **kw)}


def test_defaults_are_sagemakers_and_the_yaml_repeats_them():
    from dogbreed.config import compose

    assert RULE_DEFAULTS == SAGEMAKER_DEFAULTS
    cfg = compose("train", ["data.root=/nonexistent"])
    assert {name: dict(p) for name, p in cfg.callbacks.profiler.rules.items()} == SAGEMAKER_DEFAULTS


def test_covered_measures_overlap_with_disjoint_intervals():
    starts, ends = np.array([0.0, 2.0, 5.0]), np.array([1.0, 3.0, 8.0])
    got = covered(starts, ends, np.array([0.5, -1.0, 2.5, 3.0, 9.0]), np.array([2.5, 10.0, 6.0, 4.0, 10.0]))
    np.testing.assert_allclose(got, [0.5 + 0.5, 1 + 1 + 3, 0.5 + 1, 0.0, 0.0])


def test_sample_phases_split_wait_from_compute():
    data = synth(n_steps=100, compute_s=0.02, wait_s=0.08, interval=0.5)
    train, wait = sample_phases(data)
    inside = train > 0.99
    assert inside.sum() >= 15
    np.testing.assert_allclose(wait[inside], 0.8, atol=0.05)


def test_gpu_rules_do_not_apply_without_a_gpu():
    results = by_name(synth())
    for name in GPU_RULES:
        assert results[name].status == "NoIssuesFound"
        assert "no GPU" in results[name].message
    assert set(results) == set(RULE_DEFAULTS)


def test_low_gpu_utilization_underused_fluctuating_and_busy():
    low = by_name(synth(gpu_util=30.0, n_steps=400))["LowGPUUtilization"]
    assert low.status == "IssuesFound" and "p95 30%" in low.message
    assert "data.batch_size from 32 to 64" in low.recommendation.lower()  # compute-bound: the GPU has room
    flicker = by_name(synth(gpu_util=lambda i: 100.0 * (i % 2), n_steps=400))["LowGPUUtilization"]
    assert flicker.status == "IssuesFound" and "fluctuates" in flicker.message
    assert by_name(synth(gpu_util=95.0, n_steps=400))["LowGPUUtilization"].status == "NoIssuesFound"


def test_unmeasured_gpu_utilisation_is_not_a_false_alarm():
    results = by_name(synth(gpu_util=np.nan))
    assert results["LowGPUUtilization"].status == "NoIssuesFound"
    assert "nvidia-ml-py" in results["LowGPUUtilization"].message


def test_patience_is_capped_for_short_runs():
    # 20 % warm-up at 0 % utilisation, then busy: skipped with the cap, judged without it
    data = synth(gpu_util=lambda i: np.where(i < 0.15 * len(i), 0.0, 95.0), n_steps=400)
    params = {"LowGPUUtilization": {"window": 50}}
    assert by_name(data, params)["LowGPUUtilization"].status == "NoIssuesFound"
    assert by_name(data, params, max_patience_fraction=0.0)["LowGPUUtilization"].status == "IssuesFound"


def test_batch_size_fires_only_when_gpu_cpu_and_memory_are_all_low():
    small = by_name(synth(gpu_util=30.0, gpu_mem=20.0))["BatchSize"]
    assert small.status == "IssuesFound"
    assert "raise data.batch_size from 32 to 64" in small.recommendation.lower()
    assert by_name(synth(gpu_util=30.0, gpu_mem=90.0))["BatchSize"].status == "NoIssuesFound"


def test_gpu_memory_increase_after_patience():
    grown = by_name(synth(gpu_util=90.0, gpu_mem=lambda i: np.where(i < 300, 20.0, 85.0)))[
        "GPUMemoryIncrease"
    ]
    assert grown.status == "IssuesFound" and grown.step is not None and "85%" in grown.message
    assert by_name(synth(gpu_util=90.0, gpu_mem=40.0))["GPUMemoryIncrease"].status == "NoIssuesFound"


def test_data_bound_cpu_run_is_an_io_bottleneck_with_the_workers_fix():
    results = by_name(synth(compute_s=0.01, wait_s=0.09, proc_cpu=3.0))
    assert results["IOBottleneck"].status == "IssuesFound"
    assert (
        "raise data.num_workers from 0 to 1 (this machine has 2 cores)"
        in results["IOBottleneck"].recommendation.lower()
    )
    assert results["CPUBottleneck"].status == "NoIssuesFound"
    assert results["Dataloader"].status == "IssuesFound"
    assert "raise data.num_workers from 0 to 1" in results["Dataloader"].recommendation.lower()


def test_cpu_bound_loading_is_a_cpu_bottleneck_and_names_the_feature_cache():
    results = by_name(synth(compute_s=0.01, wait_s=0.09, proc_cpu=100.0, frozen=True, feature_cache=False))
    assert results["CPUBottleneck"].status == "IssuesFound"
    assert "data.cache.enabled=true" in results["CPUBottleneck"].recommendation
    assert results["IOBottleneck"].status == "NoIssuesFound"


def test_compute_bound_run_triggers_no_data_rule():
    results = by_name(synth(compute_s=0.1, wait_s=0.001, proc_cpu=3.0))
    for name in ("IOBottleneck", "CPUBottleneck", "Dataloader", "StepOutlier"):
        assert results[name].status == "NoIssuesFound", results[name]


def test_too_many_workers():
    result = by_name(synth(num_workers=16))["Dataloader"]
    assert (
        result.status == "IssuesFound"
        and "lower data.num_workers from 16 to 2" in result.recommendation.lower()
    )


def test_step_outliers_are_found_and_classified():
    result = by_name(synth(slow_steps={50: 1.0, 120: 1.0, 170: 1.0}))["StepOutlier"]
    assert result.status == "IssuesFound" and result.step == 50
    assert "steps 50, 120, 170" in result.message
    assert "computed longer" in result.recommendation
    waits = by_name(synth(slow_steps={}, wait_s=0.002))["StepOutlier"]
    assert waits.status == "NoIssuesFound"


def test_n_outliers_scales_with_run_length():
    # 1200 steps tolerate SageMaker's 10 outliers; 120 steps tolerate 1
    many = {i: 1.0 for i in range(100, 1200, 200)}  # 6 outliers
    assert (
        by_name(synth(n_steps=1200, slow_steps=many, interval=1.0))["StepOutlier"].status == "NoIssuesFound"
    )
    assert by_name(synth(n_steps=120, slow_steps={30: 1.0, 60: 1.0}))["StepOutlier"].status == "IssuesFound"


def test_max_initialization_time():
    slow = by_name(synth(init_s=25 * 60, data_verify=True))["MaxInitializationTime"]
    assert slow.status == "IssuesFound" and "data.verify=false" in slow.recommendation.lower()
    assert by_name(synth(init_s=60))["MaxInitializationTime"].status == "NoIssuesFound"
    never = synth(n_steps=0, init_s=30 * 60)
    assert by_name(never)["MaxInitializationTime"].status == "IssuesFound"


def test_overall_system_usage_reports_percentiles_without_judging():
    result = by_name(synth())["OverallSystemUsage"]
    assert result.status == "NoIssuesFound" and re.search(r"CPU \(2 cores\) p50 50%", result.message)


def test_params_are_validated_and_rules_can_be_switched_off():
    with pytest.raises(ValueError, match=r"rules: unknown rule 'GPUHot'"):
        resolve_params({"GPUHot": {}})
    with pytest.raises(
        ValueError, match=r"StepOutlier: unknown parameter 'sigma'; known: stddev, mode, n_outliers"
    ):
        resolve_params({"StepOutlier": {"sigma": 2}})
    with pytest.raises(ValueError, match="only training steps are timed"):
        resolve_params({"StepOutlier": {"mode": "eval"}})
    with pytest.raises(
        ValueError, match=r"callbacks.profiler.rules.Dataloader.patience=2.5 must be int \(default 10\)"
    ):
        resolve_params({"Dataloader": {"patience": 2.5}})
    with pytest.raises(ValueError, match=r"rules.IOBottleneck.threshold='high' must be float"):
        resolve_params({"IOBottleneck": {"threshold": "high"}})
    assert resolve_params({"IOBottleneck": {"threshold": 12.5}})["IOBottleneck"]["threshold"] == 12.5
    results = by_name(synth(), {"StepOutlier": None, "IOBottleneck": {"threshold": 10}})
    assert "StepOutlier" not in results and "IOBottleneck" in results


def test_a_crashing_rule_reports_error_and_the_others_still_run(monkeypatch):
    class Boom(rules_mod.RULES["Dataloader"]):
        def check(self, judge):
            raise RuntimeError("kaput")

    monkeypatch.setitem(rules_mod.RULES, "Dataloader", Boom)
    results = by_name(synth())
    assert results["Dataloader"].status == "Error" and "kaput" in results["Dataloader"].message
    assert results["IOBottleneck"].status == "NoIssuesFound"
