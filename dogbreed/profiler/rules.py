"""SageMaker's profiler rules, re-implemented on our own samples (the real ones run only inside AWS).

Names, parameter names and defaults follow SageMaker Debugger's built-in profiler rules. SageMaker
evaluates them every minute while a job runs; we evaluate once after the fit, over sliding windows, and:

* judge only samples taken while the training loop ran (validation, test and export are reported, not judged);
* scale ``patience`` (datapoints SageMaker lets pass before judging) for short local runs: the first
  ``min(patience, max_patience_fraction × datapoints)`` are skipped, so a 2-minute run is judged on its
  last 80 % while a long run behaves as on SageMaker; ``window`` shrinks to what is left;
* define "the accelerator is idle" on a CPU-only machine as "the training loop is waiting for data", and
  measure the loader's CPU as the training process tree's CPU over the cores its loaders can use (a laptop
  runs other things; SageMaker looks at any core of a dedicated instance). The loader's time off-CPU is
  its I/O wait. GPU rules (LowGPUUtilization, BatchSize, GPUMemoryIncrease) report that they do not
  apply when there is no GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dogbreed.profiler import advice
from dogbreed.profiler.judge import (
    DATA_BOUND_SHARE,
    MIN_DATAPOINTS,
    NO_GPU,
    NO_GPU_UTIL,
    Judge,
    data_fixes,
    result,
    too_few,
    windows,
)
from dogbreed.profiler.timeline import ProfileData, step_at
from dogbreed.rules import RuleResult

RULE_DEFAULTS: dict[str, dict[str, Any]] = {
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
MIN_STEPS = 20  # StepOutlier needs this many judged steps (SageMaker: 100)
TRAIN_MODES = (None, "train", "TRAIN", "ModeKeys.TRAIN")


def resolve_params(
    overrides: Mapping[str, Any] | None, where: str = "callbacks.profiler.rules"
) -> dict[str, dict[str, Any] | None]:
    """Defaults merged with ``overrides``; a rule set to None is switched off. Unknown names fail loudly."""
    resolved: dict[str, dict[str, Any] | None] = {name: dict(p) for name, p in RULE_DEFAULTS.items()}
    for name, params in (overrides or {}).items():
        if name not in RULE_DEFAULTS:
            raise ValueError(f"{where}: unknown rule {name!r}; known rules: {', '.join(RULE_DEFAULTS)}")
        if params is None:
            resolved[name] = None
            continue
        for key, value in dict(params).items():
            if key not in RULE_DEFAULTS[name]:
                known = ", ".join(RULE_DEFAULTS[name]) or "(none)"
                raise ValueError(f"{where}.{name}: unknown parameter {key!r}; known: {known}")
            resolved[name][key] = value  # type: ignore[index]
    step_outlier = resolved.get("StepOutlier")
    if step_outlier is not None and step_outlier["mode"] not in TRAIN_MODES:
        raise ValueError(
            f"{where}.StepOutlier.mode={step_outlier['mode']!r}: only training steps are timed; "
            "use null or 'train'"
        )
    return resolved


def low_gpu_utilization(
    j: Judge, threshold_p95: float, threshold_p5: float, window: int, patience: int
) -> RuleResult:
    name, sys = "LowGPUUtilization", j.data.system
    if not sys.has_gpu:
        return result(name, False, NO_GPU)
    if not sys.gpu_util_measured:
        return result(name, False, NO_GPU_UTIL)
    util, times = j.train("gpu_util", patience), j.times(patience)
    if len(util) < MIN_DATAPOINTS:
        return too_few(name, len(util))
    for g, gpu in enumerate(sys.gpu_names):
        for win in windows(len(util), window):
            p95, p5 = np.nanquantile(util[win, g], 0.95), np.nanquantile(util[win, g], 0.05)
            step = int(step_at(j.data, times[win.stop - 1 : win.stop])[0])
            if p95 < threshold_p95:
                data_bound = j.data_wait_share() >= DATA_BOUND_SHARE
                fix = (
                    data_fixes(j.data.context, io_bound=False)
                    if data_bound
                    else advice.join(
                        advice.bigger_batch(j.data.context, "the GPU has room"), advice.bf16(j.data.context)
                    )
                )
                return result(
                    name,
                    True,
                    f"{gpu}: utilisation p95 {p95:.0f}% < {threshold_p95}% over {win.stop - win.start} "
                    f"datapoints up to step {step} (underutilised).",
                    fix,
                    step,
                )
            if p5 < threshold_p5:
                return result(
                    name,
                    True,
                    f"{gpu}: utilisation fluctuates (p95 {p95:.0f}% > {threshold_p95}%, p5 {p5:.0f}% < "
                    f"{threshold_p5}%) up to step {step}: it idles between bursts.",
                    data_fixes(j.data.context, io_bound=False),
                    step,
                )
    return result(
        name,
        False,
        f"GPU utilisation p95 {np.nanquantile(util, 0.95):.0f}%, p5 {np.nanquantile(util, 0.05):.0f}% over "
        f"{len(util)} datapoints.",
    )


def _bottleneck(j: Judge, name: str, mask: np.ndarray, threshold: float, what: str, fix: str) -> RuleResult:
    n = len(mask)
    if n < MIN_DATAPOINTS:
        return too_few(name, n)
    pct = 100.0 * mask.sum() / n
    share = j.data_wait_share()
    first = int(np.argmax(mask)) if mask.any() else None
    step = int(step_at(j.data, j.times()[-n:][first : first + 1])[0]) if first is not None else None
    msg = (
        f"{what} in {mask.sum()} of {n} datapoints ({pct:.0f}%, threshold {threshold}%); data wait is "
        f"{share:.0f}% of step time."
    )
    return result(name, pct > threshold, msg, fix, step if pct > threshold else None)


def cpu_bottleneck(
    j: Judge, threshold: float, gpu_threshold: float, cpu_threshold: float, patience: int
) -> RuleResult:
    mask = j.idle(gpu_threshold, patience) & (j.loader_cpu(patience) > cpu_threshold)
    what = f"The accelerator waited while the data loaders were CPU-bound (> {cpu_threshold}% of their cores)"
    return _bottleneck(j, "CPUBottleneck", mask, threshold, what, data_fixes(j.data.context, io_bound=False))


def io_bottleneck(
    j: Judge, threshold: float, gpu_threshold: float, io_threshold: float, patience: int
) -> RuleResult:
    off_cpu = (100.0 - j.loader_cpu(patience)) > io_threshold
    mask = j.idle(gpu_threshold, patience) & (
        (j.train("iowait", patience) > io_threshold) | (j.waiting(patience) & off_cpu)
    )
    what = (
        f"The accelerator waited for data while the loaders were off-CPU, waiting on I/O (> {io_threshold}% "
        "of the time)"
    )
    return _bottleneck(j, "IOBottleneck", mask, threshold, what, data_fixes(j.data.context, io_bound=True))


def batch_size(
    j: Judge,
    cpu_threshold_p95: float,
    gpu_threshold_p95: float,
    gpu_memory_threshold_p95: float,
    patience: int,
    window: int,
) -> RuleResult:
    name, sys = "BatchSize", j.data.system
    if not sys.has_gpu:
        return result(name, False, NO_GPU)
    if not sys.gpu_util_measured:
        return result(name, False, NO_GPU_UTIL)
    cpu = j.train("cpu_cores", patience).mean(axis=1)
    util, mem, times = j.train("gpu_util", patience), j.train("gpu_mem_pct", patience), j.times(patience)
    if len(cpu) < MIN_DATAPOINTS:
        return too_few(name, len(cpu))
    for win in windows(len(cpu), window):
        cpu95 = np.quantile(cpu[win], 0.95)
        for g, gpu in enumerate(sys.gpu_names):
            gpu95, mem95 = np.nanquantile(util[win, g], 0.95), np.nanquantile(mem[win, g], 0.95)
            if cpu95 < cpu_threshold_p95 and gpu95 < gpu_threshold_p95 and mem95 < gpu_memory_threshold_p95:
                step = int(step_at(j.data, times[win.stop - 1 : win.stop])[0])
                msg = (
                    f"{gpu}: p95 utilisation {gpu95:.0f}%, p95 memory {mem95:.0f}%, CPU p95 {cpu95:.0f}% - "
                    f"all below their thresholds up to step {step}."
                )
                fix = advice.join(
                    advice.bigger_batch(j.data.context, f"GPU memory p95 was {mem95:.0f}%"),
                    "use a smaller GPU instance",
                )
                return result(name, True, msg, fix, step)
    return result(
        name,
        False,
        f"GPU utilisation p95 {np.nanquantile(util, 0.95):.0f}%, memory p95 "
        f"{np.nanquantile(mem, 0.95):.0f}%: the batch uses the GPU.",
    )


def step_outlier(j: Judge, stddev: float, mode: str | None, n_outliers: int) -> RuleResult:
    name, s = "StepOutlier", j.data.steps.arrays()
    keep = ~s["profiled"]
    keep[:1] = False  # the first step of the fit is warm-up (lazy init, allocator), not an outlier
    total = s["total"][keep]
    if len(total) < MIN_STEPS:
        return result(
            name, False, f"Only {len(total)} training steps timed: too few to judge (needs {MIN_STEPS})."
        )
    threshold = float(total.mean() + stddev * total.std())
    out = total > threshold
    steps = s["step"][keep][out].tolist()
    tolerated = max(1, min(int(n_outliers), round(n_outliers * len(total) / 1000)))
    median = float(np.median(total))
    msg = (
        f"{len(steps)} of {len(total)} steps took longer than mean + {stddev}σ = {threshold * 1000:.0f} ms "
        f"(median {median * 1000:.0f} ms, {tolerated} tolerated)"
        + (f": steps {', '.join(map(str, steps[:20]))}{' …' if len(steps) > 20 else ''}." if steps else ".")
    )
    if len(steps) <= tolerated:
        return result(name, False, msg)
    wait, compute = s["wait"][keep][out], s["compute"][keep][out]
    extra_wait = float((wait - np.median(s["wait"][keep])).sum())
    extra_compute = float((compute - np.median(s["compute"][keep])).sum())
    first_of_epoch = set(s["step"][np.r_[True, s["epoch"][1:] != s["epoch"][:-1]]].tolist())
    if extra_wait >= extra_compute and set(steps) <= first_of_epoch:
        fix = (
            "The slow steps are the first of each epoch (loader start-up): keep workers alive between epochs "
            "(data.num_workers > 0 uses persistent workers) or lower data.num_workers start-up cost."
        )
    elif extra_wait >= extra_compute:
        fix = "The slow steps waited for data. " + data_fixes(j.data.context, io_bound=True)
    else:
        fix = (
            "The slow steps computed longer: look for periodic work in those steps (checkpointing, logging "
            "every trainer.log_every_n_steps steps) or another process using the CPU/GPU at that time."
        )
    return result(name, True, msg, fix, steps[0])


def dataloader(
    j: Judge, min_threshold: float, max_threshold: float, patience: int, wait_threshold: float
) -> RuleResult:
    name, ctx = "Dataloader", j.data.context
    if ctx.num_workers is None or len(j.data.steps) == 0:
        return result(name, False, "No training DataLoader was seen.")
    share = j.data_wait_share(patience)
    s = j.data.steps.arrays()
    busy = s["total"][~s["profiled"]].sum()
    rate = s["batch_size"][~s["profiled"]].sum() / busy if busy > 0 else 0.0
    upper = ctx.cores * max_threshold / 100
    msg = (
        f"{ctx.num_workers} loader workers for {ctx.cores} cores; data wait {share:.0f}% of step time; "
        f"{rate:.1f} samples/s through the training loop."
    )
    if ctx.num_workers > upper:
        fix = (
            f"Lower data.num_workers from {ctx.num_workers} to {ctx.cores}: more than {max_threshold}% of "
            "the cores in loaders contend with training."
        )
        return result(name, True, msg, fix)
    more = advice.more_workers(ctx, min_threshold)
    if share > wait_threshold and more and ctx.num_workers < advice.target_workers(ctx, min_threshold):
        fix = advice.join(more, advice.feature_cache(ctx), advice.pin_memory(ctx))
        return result(name, True, msg + f" Below {min_threshold}% of the cores load data.", fix)
    if share > wait_threshold and advice.pin_memory(ctx):
        return result(name, True, msg, advice.join(advice.pin_memory(ctx)))
    return result(name, False, msg)


def gpu_memory_increase(j: Judge, increase: float, patience: int, window: int) -> RuleResult:
    name, sys = "GPUMemoryIncrease", j.data.system
    if not sys.has_gpu:
        return result(name, False, NO_GPU)
    mem, times = j.train("gpu_mem_pct"), j.times()
    pat = j.patience(patience, len(mem))
    w = max(1, int(window))
    for g, gpu in enumerate(sys.gpu_names):
        v = mem[:, g]
        ok = ~np.isnan(v)
        v, tv = v[ok], times[ok]
        if len(v) < w + 2:
            continue
        moving = np.convolve(v, np.ones(w) / w, mode="valid")
        diffs = moving[1:] - moving[:-1]  # diffs[i] belongs to sample i + w
        hits = [i for i in np.flatnonzero(diffs > increase) if i + w > pat]
        if hits:
            i = hits[0]
            step = int(step_at(j.data, tv[i + w : i + w + 1])[0])
            msg = (
                f"{gpu}: moving-average memory use rose {diffs[i]:.1f} points (> {increase}) to "
                f"{v[i + w]:.0f}% at step {step}."
            )
            fix = (
                "Look for tensors kept across steps (a logged loss without .detach(), outputs appended to a "
                "list), or lower data.batch_size if memory is near full."
            )
            return result(name, True, msg, fix, step)
    finite = mem[~np.isnan(mem)] if mem.size else mem
    peak = f"{finite.max():.0f}%" if finite.size else "unknown"
    return result(name, False, f"No moving-average increase above {increase} points; peak GPU memory {peak}.")


def max_initialization_time(j: Judge, threshold: float) -> RuleResult:
    name, d, ctx = "MaxInitializationTime", j.data, j.data.context
    limit = threshold * 60
    before_fit = d.fit_start - d.job_start
    if len(d.steps) == 0:
        waited = d.fit_end - d.job_start
        return result(
            name,
            waited > limit,
            f"No training step ran ({waited / 60:.1f} min after the job started).",
            "Training never reached its first step: see train.log for what it was doing.",
        )
    first = d.steps.wait_start[0]
    init, in_fit = first - d.job_start, first - d.fit_start
    msg = (
        f"First training step {init / 60:.2f} min after the job started ({before_fit:.0f} s until the "
        f"trainer's setup, {in_fit:.0f} s from there to the first batch); threshold {threshold} min."
    )
    fixes = []
    if before_fit >= in_fit:
        if ctx.data_verify:
            fixes.append("set data.verify=false once `python -m dogbreed.data check` passed")
        fixes.append(
            "pre-seed the weights ($TORCH_HOME/hub/checkpoints or model.weights_file) instead of downloading"
        )
        if ctx.feature_cache:
            fixes.append("keep data.cache.dir between runs so the backbone features are extracted once")
    else:
        if ctx.num_sanity_val_steps:
            fixes.append("set trainer.num_sanity_val_steps=0")
        fixes.append("check data-loader start-up (data.num_workers) and the first batch")
    return result(name, init > limit, msg, advice.join(*fixes), d.steps.step[0] if init > limit else None)


def _pcts(values: np.ndarray, unit: str = "%", scale: float = 1.0) -> str:
    if values.size == 0 or np.all(np.isnan(values)):
        return "n/a"
    q = np.nanquantile(values, [0.5, 0.95]) / scale
    return f"p50 {q[0]:.0f}{unit}, p95 {q[1]:.0f}{unit}, max {np.nanmax(values) / scale:.0f}{unit}"


def overall_system_usage(j: Judge) -> RuleResult:
    """Informational, as on SageMaker: percentiles of the whole job, never an issue."""
    sys = j.data.system
    if len(sys) == 0:
        return result("OverallSystemUsage", False, "No system samples were taken.")
    parts = [
        f"CPU ({sys.cores} cores) {_pcts(sys.array('cpu_cores').mean(axis=1))}",
        f"I/O wait {_pcts(sys.array('iowait'))}",
        f"system memory {_pcts(sys.array('mem_used_pct'))}",
        f"training processes RSS {_pcts(sys.array('proc_rss'), ' MB', 2**20)}",
        f"disk read {_pcts(sys.array('disk_read_bps'), ' MB/s', 1e6)}",
        f"network in {_pcts(sys.array('net_recv_bps'), ' MB/s', 1e6)}",
    ]
    if sys.has_gpu:
        parts.append(
            f"GPU utilisation {_pcts(sys.array('gpu_util').ravel())}, GPU memory "
            f"{_pcts(sys.array('gpu_mem_pct').ravel())}"
        )
    return result("OverallSystemUsage", False, "; ".join(parts) + f" ({len(sys)} datapoints).")


RULES: dict[str, Callable[..., RuleResult]] = {
    "LowGPUUtilization": low_gpu_utilization,
    "CPUBottleneck": cpu_bottleneck,
    "IOBottleneck": io_bottleneck,
    "BatchSize": batch_size,
    "StepOutlier": step_outlier,
    "Dataloader": dataloader,
    "GPUMemoryIncrease": gpu_memory_increase,
    "MaxInitializationTime": max_initialization_time,
    "OverallSystemUsage": overall_system_usage,
}


def evaluate(
    data: ProfileData,
    params: Mapping[str, Mapping[str, Any] | None] | None = None,
    max_patience_fraction: float = 0.2,
) -> list[RuleResult]:
    """Run every enabled rule; a rule that crashes reports status Error instead of hiding the others."""
    resolved = resolve_params(params)
    judge = Judge(data, max_patience_fraction)
    results = []
    for name, fn in RULES.items():
        p = resolved.get(name)
        if p is None:
            continue
        try:
            results.append(fn(judge, **p))
        except Exception as exc:
            results.append(RuleResult(name, "Error", None, f"{type(exc).__name__}: {exc}", ""))
    return results
