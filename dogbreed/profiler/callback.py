"""``ProfilerCallback``: why is my training slow? System monitor + step timing + rules + report.

Enabled by default (``callbacks.profiler``; set it to null to switch it off). During ``fit`` a daemon
thread samples the system every ``system_monitor_interval_millis``; the batch hooks time each step's
data wait and compute; optionally ``torch.profiler`` records ``framework_profile.num_steps`` steps from
``framework_profile.start_step`` (those steps are slower and are left out of the step statistics).
At the end of the fit (or when it fails) the rules run and ``profiler.json`` / ``profiler.html`` are
written to ``output_dir``. Nothing here can fail the training: report errors are logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import psutil
import torch

from dogbreed.atomic import replacing
from dogbreed.cores import usable_cores
from dogbreed.perf import bf16_native
from dogbreed.profiler.builtin_rules import resolve_params, run_profiler_rules
from dogbreed.profiler.report import write_report
from dogbreed.profiler.sampler import GpuMonitor, SystemSampler
from dogbreed.profiler.timeline import ProfileData, RunContext, StepTimer
from dogbreed.rules import RuleResult

log = logging.getLogger(__name__)

FRAMEWORK_PROFILE_DEFAULTS: dict[str, Any] = {"start_step": 5, "num_steps": 3, "export_trace": True}
TOP_OPERATORS = 15
_fits_in_process = 0  # the first fit in a process measures initialisation from the process start


def _feature_cache_state(datamodule: Any) -> bool | None:
    """True: the run trains from cached backbone features; False: it could (``data.cache``) but does not;
    None: the data module has no feature cache."""
    cache = getattr(datamodule, "cache", None)
    if cache is None:
        return None
    if hasattr(datamodule, "uses_feature_cache"):
        return bool(datamodule.uses_feature_cache)
    return bool(cache.get("enabled")) if isinstance(cache, Mapping) else bool(cache)


def _cuda_indices(trainer: pl.Trainer) -> list[int]:
    """CUDA devices this process trains on (none for CPU runs, even on a machine with GPUs)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    return list(trainer.device_ids) if isinstance(trainer.accelerator, CUDAAccelerator) else []


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    return 0


class ProfilerCallback(pl.Callback):
    """Sample the system, time every training step, optionally run torch.profiler, then judge and report.

    Args:
        output_dir: where ``profiler.json``/``profiler.html`` go (default ``<default_root_dir>/reports``).
        system_monitor_interval_millis: sampling interval, as in SageMaker's ProfilerConfig.
        framework_profile: ``start_step``, ``num_steps`` (0 = off), ``export_trace`` (a Chrome trace).
        rules: per-rule parameter overrides (SageMaker's names); a rule set to null is switched off.
        max_patience_fraction: cap on each rule's ``patience`` as a fraction of the datapoints (short runs).
        html: also write the HTML report.
        cuda_sync: synchronise CUDA at the end of each step so compute times are real, not launch times.
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        system_monitor_interval_millis: int = 500,
        framework_profile: Mapping[str, Any] | None = None,
        rules: Mapping[str, Any] | None = None,
        max_patience_fraction: float = 0.2,
        html: bool = True,
        cuda_sync: bool = True,
    ) -> None:
        where = "callbacks.profiler"
        if system_monitor_interval_millis is None or float(system_monitor_interval_millis) <= 0:
            raise ValueError(
                f"{where}.system_monitor_interval_millis must be > 0 (milliseconds), got "
                f"{system_monitor_interval_millis!r}"
            )
        unknown = set(framework_profile or {}) - set(FRAMEWORK_PROFILE_DEFAULTS)
        if unknown:
            raise ValueError(
                f"{where}.framework_profile: unknown key(s) {sorted(unknown)}; known: "
                f"{', '.join(FRAMEWORK_PROFILE_DEFAULTS)}"
            )
        self.framework_profile = {**FRAMEWORK_PROFILE_DEFAULTS, **dict(framework_profile or {})}
        for key in ("start_step", "num_steps"):
            if int(self.framework_profile[key]) < 0:
                raise ValueError(
                    f"{where}.framework_profile.{key} must be >= 0, got {self.framework_profile[key]}"
                )
        if not 0.0 <= float(max_patience_fraction) <= 1.0:
            raise ValueError(
                f"{where}.max_patience_fraction must be within [0, 1], got {max_patience_fraction}"
            )
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.interval_ms = float(system_monitor_interval_millis)
        self.rule_params = resolve_params(rules)
        self.max_patience_fraction = float(max_patience_fraction)
        self.html = bool(html)
        self.cuda_sync = bool(cuda_sync)
        self._created = time.perf_counter()
        self._active = False
        self.results: list[RuleResult] = []
        self.data: ProfileData | None = None
        self.report_paths: dict[str, Path] = {}

    # -- lifecycle -------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        global _fits_in_process
        if stage != "fit" or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        if _fits_in_process == 0:
            self._job_start = now - max(0.0, time.time() - psutil.Process().create_time())
        else:
            self._job_start = self._created
        _fits_in_process += 1
        self._fit_start = now
        self._default_dir = Path(trainer.default_root_dir) / "reports"
        self._timer = StepTimer()
        self._context = RunContext(cores=usable_cores())
        self._batches = 0
        self._hook_s = 0.0
        self._torch_prof: Any = None
        self._profiled_range = range(0)
        self._top_ops: list[dict[str, Any]] = []
        self._sampler = SystemSampler(self.interval_ms / 1000.0, GpuMonitor(_cuda_indices(trainer))).start()
        self._active = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._context = self._read_context(trainer, pl_module)
        self._batches = int(trainer.global_step)
        fp = self.framework_profile
        start = self._batches + int(fp["start_step"])
        self._profiled_range = range(start, start + int(fp["num_steps"]))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active:
            self._timer.resume(time.perf_counter())

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active:
            return
        now = time.perf_counter()
        if batch_idx == 0:
            self._sampler.rescan_children()  # data-loader workers exist once the epoch's iterator does
        profiled = self._batches in self._profiled_range
        size = self._context.batch_size if self._context.batch_size else _batch_size(batch)
        self._timer.batch_start(now, self._batches, trainer.current_epoch, size, profiled)
        self._hook_s += time.perf_counter() - now  # the profiler's own cost, torch.profiler aside
        if profiled and self._torch_prof is None:
            self._start_torch_profiler()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._active:
            return
        if self.cuda_sync and self._context.device == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self._timer.batch_end(now)
        self._batches += 1
        self._hook_s += time.perf_counter() - now
        if self._torch_prof is not None and self._batches >= self._profiled_range.stop:
            self._stop_torch_profiler()
            self._timer.resume(time.perf_counter())  # summarising the trace is not the next step's data wait

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active and not trainer.sanity_checking:
            self._timer.resume(time.perf_counter())

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._finish(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish(trainer)

    # -- helpers ---------------------------------------------------------------------------------------
    def _read_context(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> RunContext:
        loader = trainer.train_dataloader
        datamodule = getattr(trainer, "datamodule", None)
        hparams = getattr(pl_module, "hparams", {}) or {}
        freeze = hparams.get("freeze") if hasattr(hparams, "get") else None
        device = pl_module.device.type
        return RunContext(
            cores=usable_cores(),
            device=device,
            num_workers=getattr(loader, "num_workers", None),
            batch_size=getattr(loader, "batch_size", None),
            pin_memory=getattr(loader, "pin_memory", None),
            precision=str(trainer.precision),
            frozen=None if freeze is None else freeze in (True, "frozen"),
            feature_cache=_feature_cache_state(datamodule),
            bf16_capable=bf16_native(device),
            data_verify=getattr(datamodule, "verify", None),
            num_sanity_val_steps=getattr(trainer, "num_sanity_val_steps", None),
        )

    def _start_torch_profiler(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self._context.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._torch_prof = profile(activities=activities, record_shapes=False, with_stack=False)
        self._torch_prof.start()

    def _stop_torch_profiler(self) -> None:
        prof, self._torch_prof = self._torch_prof, None
        if prof is None:
            return
        prof.stop()
        events = sorted(
            prof.key_averages(),
            key=lambda e: e.self_cpu_time_total + getattr(e, "self_device_time_total", 0),
            reverse=True,
        )
        self._top_ops = [
            {
                "name": e.key,
                "calls": int(e.count),
                "self_cpu_ms": e.self_cpu_time_total / 1000.0,
                "cpu_total_ms": e.cpu_time_total / 1000.0,
                "self_device_ms": getattr(e, "self_device_time_total", 0) / 1000.0,
            }
            for e in events[:TOP_OPERATORS]
        ]
        if self.framework_profile["export_trace"]:
            with replacing(self._out_dir / "torch_trace.json") as tmp:
                prof.export_chrome_trace(str(tmp))

    @property
    def _out_dir(self) -> Path:
        return self.output_dir if self.output_dir is not None else self._default_dir

    def _finish(self, trainer: pl.Trainer) -> None:
        if not self._active:
            return
        self._active = False
        try:
            series = self._sampler.stop()
            self._stop_torch_profiler()
            overhead = {
                "sampler_cpu_s": self._sampler.thread_cpu_s,
                "sampler_wall_s": self._sampler.thread_wall_s,
                "hooks_s": self._hook_s,
            }
            self.data = ProfileData(
                series,
                self._timer.timeline,
                self._context,
                self._job_start,
                self._fit_start,
                time.perf_counter(),
                self._top_ops,
                overhead,
            )
            self.results = run_profiler_rules(self.data, self.rule_params, self.max_patience_fraction)
            self.report_paths = write_report(
                self._out_dir,
                self.data,
                self.results,
                {
                    "system_monitor_interval_millis": self.interval_ms,
                    "framework_profile": self.framework_profile,
                    "max_patience_fraction": self.max_patience_fraction,
                    "rules": self.rule_params,
                },
                html_report=self.html,
            )
        except Exception:  # a report must never turn a finished training into a failed one
            log.exception("Profiler: could not write the report")
            return
        issues = [r for r in self.results if r.status == "IssuesFound"]
        for r in issues:
            log.warning("Profiler %s: %s %s", r.name, r.message, r.recommendation)
        log.info(
            "Profiler report: %s (%s)",
            self.report_paths.get("html") or self.report_paths.get("json"),
            ", ".join(r.name for r in issues) or "no issues found",
        )
