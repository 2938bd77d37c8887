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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dogbreed import rules as base
from dogbreed.profiler import advice
from dogbreed.profiler.judge import (
    DATA_BOUND_SHARE,
    MIN_DATAPOINTS,
    NO_GPU,
    NO_GPU_UTIL,
    Judge,
    data_fixes,
    windows,
)
from dogbreed.profiler.timeline import ProfileData, step_at
from dogbreed.rules import Rule, RuleResult

__all__ = ["RULES", "RULE_DEFAULTS", "ProfilerRule", "build_rules", "resolve_params", "run_profiler_rules"]

MIN_STEPS = 20  # StepOutlier needs this many judged steps (SageMaker: 100)


@dataclass
class ProfilerRule(Rule):
    """A profiler rule: ``check`` judges a whole run through a :class:`Judge` and returns its result."""

    config_key = "callbacks.profiler.rules"

    def check(self, j: Judge) -> RuleResult:
        raise NotImplementedError

    def without_gpu(self, j: Judge, utilisation: bool = True) -> RuleResult | None:
        """NoIssuesFound saying why, when the run gives a GPU rule nothing to judge (no GPU, or, for
        ``utilisation``, no NVML); None when it does."""
        if not j.data.system.has_gpu:
            return self.outcome(False, NO_GPU)
        if utilisation and not j.data.system.gpu_util_measured:
            return self.outcome(False, NO_GPU_UTIL)
        return None

    def too_few(self, n: int) -> RuleResult:
        return self.outcome(
            False,
            f"Only {n} datapoints while the training loop ran: too few to judge "
            "(train longer or lower callbacks.profiler.system_monitor_interval_millis).",
        )


@dataclass
class LowGPUUtilization(ProfilerRule):
    name = "LowGPUUtilization"
    threshold_p95: float = 70
    threshold_p5: float = 10
    window: int = 500
    patience: int = 1000

    def check(self, j: Judge) -> RuleResult:
        sys, ctx = j.data.system, j.data.context
        if (skipped := self.without_gpu(j)) is not None:
            return skipped
        util, times = j.train("gpu_util", self.patience), j.times(self.patience)
        if len(util) < MIN_DATAPOINTS:
            return self.too_few(len(util))
        for g, gpu in enumerate(sys.gpu_names):
            for win in windows(len(util), self.window):
                p95, p5 = np.nanquantile(util[win, g], 0.95), np.nanquantile(util[win, g], 0.05)
                step = int(step_at(j.data, times[win.stop - 1 : win.stop])[0])
                if p95 < self.threshold_p95:
                    data_bound = j.data_wait_share() >= DATA_BOUND_SHARE
                    fix = (
                        data_fixes(ctx, io_bound=False)
                        if data_bound
                        else advice.join(advice.bigger_batch(ctx, "the GPU has room"), advice.bf16(ctx))
                    )
                    return self.outcome(
                        True,
                        f"{gpu}: utilisation p95 {p95:.0f}% < {self.threshold_p95}% over "
                        f"{win.stop - win.start} datapoints up to step {step} (underutilised).",
                        fix,
                        step,
                    )
                if p5 < self.threshold_p5:
                    return self.outcome(
                        True,
                        f"{gpu}: utilisation fluctuates (p95 {p95:.0f}% > {self.threshold_p95}%, "
                        f"p5 {p5:.0f}% < {self.threshold_p5}%) up to step {step}: it idles between bursts.",
                        data_fixes(ctx, io_bound=False),
                        step,
                    )
        return self.outcome(
            False,
            f"GPU utilisation p95 {np.nanquantile(util, 0.95):.0f}%, p5 {np.nanquantile(util, 0.05):.0f}% "
            f"over {len(util)} datapoints.",
        )


@dataclass
class _Bottleneck(ProfilerRule):
    """CPUBottleneck and IOBottleneck: the accelerator idle (``gpu_threshold``) while the loaders are
    CPU-bound or waiting, in more than ``threshold`` % of the datapoints."""

    threshold: float = 50
    gpu_threshold: float = 10

    def judged(self, j: Judge, mask: np.ndarray, threshold: float, what: str, fix: str) -> RuleResult:
        n = len(mask)
        if n < MIN_DATAPOINTS:
            return self.too_few(n)
        pct = 100.0 * mask.sum() / n
        share = j.data_wait_share()
        first = int(np.argmax(mask)) if mask.any() else None
        step = int(step_at(j.data, j.times()[-n:][first : first + 1])[0]) if first is not None else None
        msg = (
            f"{what} in {mask.sum()} of {n} datapoints ({pct:.0f}%, threshold {threshold}%); data wait is "
            f"{share:.0f}% of step time."
        )
        return self.outcome(pct > threshold, msg, fix, step if pct > threshold else None)


@dataclass
class CPUBottleneck(_Bottleneck):
    name = "CPUBottleneck"
    cpu_threshold: float = 90
    patience: int = 1000

    def check(self, j: Judge) -> RuleResult:
        mask = j.idle(self.gpu_threshold, self.patience) & (j.loader_cpu(self.patience) > self.cpu_threshold)
        what = (
            "The accelerator waited while the data loaders were CPU-bound "
            f"(> {self.cpu_threshold}% of their cores)"
        )
        return self.judged(j, mask, self.threshold, what, data_fixes(j.data.context, io_bound=False))


@dataclass
class IOBottleneck(_Bottleneck):
    name = "IOBottleneck"
    io_threshold: float = 50
    patience: int = 1000

    def check(self, j: Judge) -> RuleResult:
        off_cpu = (100.0 - j.loader_cpu(self.patience)) > self.io_threshold
        mask = j.idle(self.gpu_threshold, self.patience) & (
            (j.train("iowait", self.patience) > self.io_threshold) | (j.waiting(self.patience) & off_cpu)
        )
        what = (
            "The accelerator waited for data while the loaders were off-CPU, waiting on I/O "
            f"(> {self.io_threshold}% of the time)"
        )
        return self.judged(j, mask, self.threshold, what, data_fixes(j.data.context, io_bound=True))


@dataclass
class BatchSize(ProfilerRule):
    name = "BatchSize"
    cpu_threshold_p95: float = 70
    gpu_threshold_p95: float = 70
    gpu_memory_threshold_p95: float = 70
    patience: int = 1000
    window: int = 500

    def check(self, j: Judge) -> RuleResult:
        sys = j.data.system
        if (skipped := self.without_gpu(j)) is not None:
            return skipped
        cpu = j.train("cpu_cores", self.patience).mean(axis=1)
        util, mem = j.train("gpu_util", self.patience), j.train("gpu_mem_pct", self.patience)
        times = j.times(self.patience)
        if len(cpu) < MIN_DATAPOINTS:
            return self.too_few(len(cpu))
        for win in windows(len(cpu), self.window):
            cpu95 = np.quantile(cpu[win], 0.95)
            for g, gpu in enumerate(sys.gpu_names):
                gpu95, mem95 = np.nanquantile(util[win, g], 0.95), np.nanquantile(mem[win, g], 0.95)
                if (
                    cpu95 < self.cpu_threshold_p95
                    and gpu95 < self.gpu_threshold_p95
                    and mem95 < self.gpu_memory_threshold_p95
                ):
                    step = int(step_at(j.data, times[win.stop - 1 : win.stop])[0])
                    msg = (
                        f"{gpu}: p95 utilisation {gpu95:.0f}%, p95 memory {mem95:.0f}%, CPU p95 {cpu95:.0f}% "
                        f"- all below their thresholds up to step {step}."
                    )
                    fix = advice.join(
                        advice.bigger_batch(j.data.context, f"GPU memory p95 was {mem95:.0f}%"),
                        "use a smaller GPU instance",
                    )
                    return self.outcome(True, msg, fix, step)
        return self.outcome(
            False,
            f"GPU utilisation p95 {np.nanquantile(util, 0.95):.0f}%, memory p95 "
            f"{np.nanquantile(mem, 0.95):.0f}%: the batch uses the GPU.",
        )


@dataclass
class StepOutlier(ProfilerRule):
    name = "StepOutlier"
    TRAIN_MODES: ClassVar[tuple[str | None, ...]] = (None, "train", "TRAIN", "ModeKeys.TRAIN")
    stddev: float = 3
    mode: str | None = None
    n_outliers: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in self.TRAIN_MODES:
            raise ValueError(
                f"{self.key('mode')}={self.mode!r}: only training steps are timed; use null or 'train'"
            )

    def check(self, j: Judge) -> RuleResult:
        s = j.data.steps.arrays()
        keep = ~s["profiled"]
        keep[:1] = False  # the first step of the fit is warm-up (lazy init, allocator), not an outlier
        total = s["total"][keep]
        if len(total) < MIN_STEPS:
            return self.outcome(
                False, f"Only {len(total)} training steps timed: too few to judge (needs {MIN_STEPS})."
            )
        threshold = float(total.mean() + self.stddev * total.std())
        out = total > threshold
        steps = s["step"][keep][out].tolist()
        tolerated = max(1, min(int(self.n_outliers), round(self.n_outliers * len(total) / 1000)))
        median = float(np.median(total))
        msg = (
            f"{len(steps)} of {len(total)} steps took longer than mean + {self.stddev}σ = "
            f"{threshold * 1000:.0f} ms (median {median * 1000:.0f} ms, {tolerated} tolerated)"
            + (
                f": steps {', '.join(map(str, steps[:20]))}{' …' if len(steps) > 20 else ''}."
                if steps
                else "."
            )
        )
        if len(steps) <= tolerated:
            return self.outcome(False, msg)
        wait, compute = s["wait"][keep][out], s["compute"][keep][out]
        extra_wait = float((wait - np.median(s["wait"][keep])).sum())
        extra_compute = float((compute - np.median(s["compute"][keep])).sum())
        first_of_epoch = set(s["step"][np.r_[True, s["epoch"][1:] != s["epoch"][:-1]]].tolist())
        if extra_wait >= extra_compute and set(steps) <= first_of_epoch:
            fix = (
                "The slow steps are the first of each epoch (loader start-up): keep workers alive between "
                "epochs (data.num_workers > 0 uses persistent workers) or lower data.num_workers start-up "
                "cost."
            )
        elif extra_wait >= extra_compute:
            fix = "The slow steps waited for data. " + data_fixes(j.data.context, io_bound=True)
        else:
            fix = (
                "The slow steps computed longer: look for periodic work in those steps (checkpointing, "
                "logging every trainer.log_every_n_steps steps) or another process using the CPU/GPU at that "
                "time."
            )
        return self.outcome(True, msg, fix, steps[0])


@dataclass
class Dataloader(ProfilerRule):
    name = "Dataloader"
    min_threshold: float = 70
    max_threshold: float = 200
    patience: int = 10
    wait_threshold: float = 20  # ours: SageMaker's rule has no notion of the loop waiting

    def check(self, j: Judge) -> RuleResult:
        ctx = j.data.context
        if ctx.num_workers is None or len(j.data.steps) == 0:
            return self.outcome(False, "No training DataLoader was seen.")
        share = j.data_wait_share(self.patience)
        s = j.data.steps.arrays()
        busy = s["total"][~s["profiled"]].sum()
        rate = s["batch_size"][~s["profiled"]].sum() / busy if busy > 0 else 0.0
        upper = ctx.cores * self.max_threshold / 100
        msg = (
            f"{ctx.num_workers} loader workers for {ctx.cores} cores; data wait {share:.0f}% of step time; "
            f"{rate:.1f} samples/s through the training loop."
        )
        if ctx.num_workers > upper:
            fix = (
                f"Lower data.num_workers from {ctx.num_workers} to {ctx.cores}: more than "
                f"{self.max_threshold}% of the cores in loaders contend with training."
            )
            return self.outcome(True, msg, fix)
        more = advice.more_workers(ctx, self.min_threshold)
        waits = share > self.wait_threshold
        if waits and more and ctx.num_workers < advice.target_workers(ctx, self.min_threshold):
            fix = advice.join(more, advice.feature_cache(ctx), advice.pin_memory(ctx))
            return self.outcome(True, msg + f" Below {self.min_threshold}% of the cores load data.", fix)
        if waits and advice.pin_memory(ctx):
            return self.outcome(True, msg, advice.join(advice.pin_memory(ctx)))
        return self.outcome(False, msg)


@dataclass
class GPUMemoryIncrease(ProfilerRule):
    name = "GPUMemoryIncrease"
    increase: float = 5
    patience: int = 1000
    window: int = 10

    def check(self, j: Judge) -> RuleResult:
        if (skipped := self.without_gpu(j, utilisation=False)) is not None:
            return skipped
        sys = j.data.system
        mem, times = j.train("gpu_mem_pct"), j.times()
        pat = j.patience(self.patience, len(mem))
        w = max(1, int(self.window))
        for g, gpu in enumerate(sys.gpu_names):
            v = mem[:, g]
            ok = ~np.isnan(v)
            v, tv = v[ok], times[ok]
            if len(v) < w + 2:
                continue
            moving = np.convolve(v, np.ones(w) / w, mode="valid")
            diffs = moving[1:] - moving[:-1]  # diffs[i] belongs to sample i + w
            hits = [i for i in np.flatnonzero(diffs > self.increase) if i + w > pat]
            if hits:
                i = hits[0]
                step = int(step_at(j.data, tv[i + w : i + w + 1])[0])
                msg = (
                    f"{gpu}: moving-average memory use rose {diffs[i]:.1f} points (> {self.increase}) to "
                    f"{v[i + w]:.0f}% at step {step}."
                )
                fix = (
                    "Look for tensors kept across steps (a logged loss without .detach(), outputs appended "
                    "to a list), or lower data.batch_size if memory is near full."
                )
                return self.outcome(True, msg, fix, step)
        finite = mem[~np.isnan(mem)] if mem.size else mem
        peak = f"{finite.max():.0f}%" if finite.size else "unknown"
        return self.outcome(
            False, f"No moving-average increase above {self.increase} points; peak GPU memory {peak}."
        )


@dataclass
class MaxInitializationTime(ProfilerRule):
    name = "MaxInitializationTime"
    threshold: float = 20  # minutes

    def check(self, j: Judge) -> RuleResult:
        d, ctx = j.data, j.data.context
        limit = self.threshold * 60
        before_fit = d.fit_start - d.job_start
        if len(d.steps) == 0:
            waited = d.fit_end - d.job_start
            return self.outcome(
                waited > limit,
                f"No training step ran ({waited / 60:.1f} min after the job started).",
                "Training never reached its first step: see train.log for what it was doing.",
            )
        first = d.steps.wait_start[0]
        init, in_fit = first - d.job_start, first - d.fit_start
        msg = (
            f"First training step {init / 60:.2f} min after the job started ({before_fit:.0f} s until the "
            f"trainer's setup, {in_fit:.0f} s from there to the first batch); threshold {self.threshold} min."
        )
        fixes = []
        if before_fit >= in_fit:
            if ctx.data_verify:
                fixes.append("set data.verify=false once `python -m dogbreed.data check` passed")
            fixes.append(
                "pre-seed the weights ($TORCH_HOME/hub/checkpoints or model.weights_file) instead of "
                "downloading"
            )
            if ctx.feature_cache:
                fixes.append("keep data.cache.dir between runs so the backbone features are extracted once")
        else:
            if ctx.num_sanity_val_steps:
                fixes.append("set trainer.num_sanity_val_steps=0")
            fixes.append("check data-loader start-up (data.num_workers) and the first batch")
        slow = init > limit
        return self.outcome(slow, msg, advice.join(*fixes), d.steps.step[0] if slow else None)


def _pcts(values: np.ndarray, unit: str = "%", scale: float = 1.0) -> str:
    if values.size == 0 or np.all(np.isnan(values)):
        return "n/a"
    q = np.nanquantile(values, [0.5, 0.95]) / scale
    return f"p50 {q[0]:.0f}{unit}, p95 {q[1]:.0f}{unit}, max {np.nanmax(values) / scale:.0f}{unit}"


@dataclass
class OverallSystemUsage(ProfilerRule):
    """Informational, as on SageMaker: percentiles of the whole job, never an issue."""

    name = "OverallSystemUsage"

    def check(self, j: Judge) -> RuleResult:
        sys = j.data.system
        if len(sys) == 0:
            return self.outcome(False, "No system samples were taken.")
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
        return self.outcome(False, "; ".join(parts) + f" ({len(sys)} datapoints).")


RULES: dict[str, type[ProfilerRule]] = {
    cls.name: cls
    for cls in (
        LowGPUUtilization,
        CPUBottleneck,
        IOBottleneck,
        BatchSize,
        StepOutlier,
        Dataloader,
        GPUMemoryIncrease,
        MaxInitializationTime,
        OverallSystemUsage,
    )
}
# SageMaker's defaults per rule, read from the rule classes (the YAML repeats them).
RULE_DEFAULTS: dict[str, dict[str, Any]] = {name: cls.defaults for name, cls in RULES.items()}


def build_rules(overrides: Mapping[str, Mapping[str, Any] | None] | None = None) -> list[ProfilerRule]:
    """Every rule, with ``overrides`` over SageMaker's defaults; a rule set to None is switched off."""
    return base.build_rules(RULES, overrides or {}, unlisted="default")


def resolve_params(overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any] | None]:
    """``{rule: parameters | None (off)}`` for every rule: what a run used (profiler.json's parameters)."""
    built = {rule.name: rule.params for rule in build_rules(overrides)}
    return {name: built.get(name) for name in RULES}


def run_profiler_rules(
    data: ProfileData,
    rules: list[ProfilerRule] | Mapping[str, Mapping[str, Any] | None] | None = None,
    max_patience_fraction: float = 0.2,
) -> list[RuleResult]:
    """Run the rules (built ones, or overrides for :func:`build_rules`) over a run; a rule that crashes
    reports status Error instead of hiding the others."""
    if not isinstance(rules, list):
        rules = build_rules(rules)
    judge = Judge(data, max_patience_fraction)
    return base.run_rules(rules, lambda rule: rule.check(judge))
