"""``ProfilerCallback``: why is my training slow? System monitor + step timing + rules + report.

Enabled by default (``callbacks.profiler``; set it to null to switch it off). During ``fit`` a daemon
thread samples the system every ``system_monitor_interval_millis``; the batch hooks time each step's
data wait and compute; optionally ``torch.profiler`` records ``framework_profile.num_steps`` steps from
``framework_profile.start_step`` (those steps are slower and are left out of the step statistics).
At the end of the fit (or when it fails) the rules run and ``profiler.json`` / ``profiler.html`` are
written to ``output_dir``. Nothing here can fail the training: report errors are logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import psutil
import torch

from dogbreed.atomic import replacing
from dogbreed.callbacks.state import pack, unpack
from dogbreed.cores import usable_cores
from dogbreed.data.datamodule import ImageFolderDataModule
from dogbreed.perf import bf16_native
from dogbreed.profiler.builtin_rules import resolve_params, run_profiler_rules
from dogbreed.profiler.report import write_report
from dogbreed.profiler.sampler import GpuMonitor, SystemSampler, SystemSeries
from dogbreed.profiler.timeline import ProfileData, RunContext, StepTimeline, StepTimer
from dogbreed.rules import RuleResult

log = logging.getLogger(__name__)

FRAMEWORK_PROFILE_DEFAULTS: dict[str, Any] = {"start_step": 5, "num_steps": 3, "export_trace": True}
TOP_OPERATORS = 15
_fits_in_process = 0  # the first fit in a process measures initialisation from the process start


def _feature_cache_state(datamodule: Any) -> bool | None:
    """True: the run trains from cached backbone features; False: it could (``data.cache``) but does not;
    None: another data module, which has no feature cache."""
    if not isinstance(datamodule, ImageFolderDataModule):
        return None
    return datamodule.features is not None


# Fields holding time.perf_counter() seconds: moved to wall-clock time in a checkpoint (a resumed process
# has another perf_counter origin) and back when the resumed run merges them with its own.
_CLOCK_FIELDS = {StepTimeline: ("wait_start", "start", "end"), SystemSeries: ("t",)}


def _shifted(columns: StepTimeline | SystemSeries, offset: float) -> StepTimeline | SystemSeries:
    """A copy with every list column cut to the shortest (the sampler thread may be mid-append) and the
    clock columns moved by ``offset`` seconds."""
    lists = [f.name for f in dataclasses.fields(columns) if isinstance(getattr(columns, f.name), list)]
    lengths = [len(getattr(columns, n)) for n in lists if n not in ("gpu_names",)]
    n = min(lengths) if lengths else 0
    changes = {name: list(getattr(columns, name)[:n]) for name in lists if name != "gpu_names"}
    for name in _CLOCK_FIELDS[type(columns)]:
        changes[name] = [t + offset for t in changes[name]]
    return dataclasses.replace(columns, **changes)


def _joined(earlier: StepTimeline | SystemSeries, later: StepTimeline | SystemSeries):
    """``earlier``'s rows followed by ``later``'s (same columns)."""
    changes = {
        f.name: getattr(earlier, f.name) + getattr(later, f.name)
        for f in dataclasses.fields(later)
        if isinstance(getattr(later, f.name), list) and f.name != "gpu_names"
    }
    return dataclasses.replace(later, **changes)


def _wall_offset() -> float:
    """Add to a perf_counter reading to get wall-clock seconds (time.time)."""
    return time.time() - time.perf_counter()


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
        self._earlier: dict[str, Any] | None = None  # what the run had measured before it was resumed

    # -- lifecycle -------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        global _fits_in_process
        if stage != "fit" or not trainer.is_global_zero:
            return
        self._earlier = None  # load_state_dict (a resumed fit) runs after setup
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

    # -- checkpoint state: a resumed run's report covers the whole run ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Steps and system samples so far (earlier segments included), on the wall clock."""
        if self.data is not None and not self._active:
            steps, system, job_start, fit_start = (
                self.data.steps,
                self.data.system,
                self.data.job_start,
                self.data.fit_start,
            )
            top_ops, hooks_s = self.data.top_ops, self.data.overhead.get("hooks_s", 0.0)
        elif self._active:
            steps, system = self._merged(self._timer.timeline, self._sampler.series)
            job_start, fit_start = self._starts()
            earlier = self._earlier or {}
            top_ops = self._top_ops or list(earlier.get("top_ops", []))
            hooks_s = self._hook_s + float(earlier.get("hooks_s", 0.0))
        else:
            return dict(self._earlier or {})
        offset = _wall_offset()
        return pack(
            {
                "steps": _shifted(steps, offset),
                "system": _shifted(system, offset),
                "job_start": job_start + offset,
                "fit_start": fit_start + offset,
                "top_ops": top_ops,
                "hooks_s": hooks_s,
            }
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        earlier = dict(state_dict)
        earlier["steps"] = unpack(earlier["steps"], StepTimeline)
        earlier["system"] = unpack(earlier["system"], SystemSeries)
        self._earlier = earlier

    def _merged(self, steps: StepTimeline, system: SystemSeries) -> tuple[StepTimeline, SystemSeries]:
        """This process's measurements after the earlier segments' (moved to this process's clock)."""
        if not self._earlier:
            return steps, system
        offset = -_wall_offset()
        old_steps = _shifted(self._earlier["steps"], offset)
        old_system = _shifted(self._earlier["system"], offset)
        same_machine = (old_system.cores, old_system.gpu_names) == (system.cores, system.gpu_names)
        if not same_machine:
            log.info("Profiler: resumed on a different machine; system samples cover this part only")
        return _joined(old_steps, steps), _joined(old_system, system) if same_machine else system

    def _starts(self) -> tuple[float, float]:
        """(job start, fit start) on this process's clock: the earliest segment's when resumed."""
        if not self._earlier:
            return self._job_start, self._fit_start
        offset = -_wall_offset()
        return self._earlier["job_start"] + offset, self._earlier["fit_start"] + offset

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
        else:  # kineto's C++ log: "USDT: profiler_start", "ERROR: gpuGetDeviceCount failed" without a GPU
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
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
            earlier_hooks = float((self._earlier or {}).get("hooks_s", 0.0))
            overhead = {
                "sampler_cpu_s": self._sampler.thread_cpu_s,
                "sampler_wall_s": self._sampler.thread_wall_s,
                "hooks_s": self._hook_s + earlier_hooks,
            }
            steps, series = self._merged(self._timer.timeline, series)
            job_start, fit_start = self._starts()
            top_ops = self._top_ops or list((self._earlier or {}).get("top_ops", []))
            self.data = ProfileData(
                series, steps, self._context, job_start, fit_start, time.perf_counter(), top_ops, overhead
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
