"""Background system monitor: one sample every ``interval_s`` on a daemon thread.

Like SageMaker's system monitor (``system_monitor_interval_millis``), but kept in memory and analysed by
our own rules at the end of the fit. Each sample is a *rate over the interval since the previous one*
(CPU %, I/O bytes/s), so a slow sample never hides load. The training thread never waits for it: the
only shared state is append-only lists, read after the thread has stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from dogbreed.cores import usable_cores

log = logging.getLogger(__name__)

# How often (seconds) the sampler re-discovers the training process's children (data-loader workers):
# psutil.Process.children() scans every process, so it is not done on every sample.
CHILD_RESCAN_S = 10.0


def nvml_device(cuda_index: int, visible: str | None) -> int | str:
    """NVML index (or ``GPU-…`` UUID) of CUDA device ``cuda_index`` under ``CUDA_VISIBLE_DEVICES=visible``."""
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if not entries or cuda_index >= len(entries):
        return cuda_index
    entry = entries[cuda_index]
    return int(entry) if entry.isdigit() else entry


class GpuMonitor:
    """Utilisation and memory of the CUDA devices training uses: NVML when available, else torch.cuda
    (memory only). Creates no CUDA context: it never touches a device torch has not initialised."""

    def __init__(self, cuda_indices: list[int] | None = None) -> None:
        self.indices = list(cuda_indices or [])
        self.names: list[str] = [f"cuda:{i}" for i in self.indices]
        self.source: str | None = None
        self._handles: list[Any] = []
        self._nvml: Any = None
        if not self.indices:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            devices = [nvml_device(i, visible) for i in self.indices]
            self._handles = [
                pynvml.nvmlDeviceGetHandleByUUID(d)
                if isinstance(d, str)
                else pynvml.nvmlDeviceGetHandleByIndex(d)
                for d in devices
            ]
            self._nvml = pynvml
            self.source = "nvml"
        except Exception as exc:  # no nvidia-ml-py, or no driver library: fall back to torch
            log.info("NVML unavailable (%s); GPU memory from torch.cuda, utilisation not measured", exc)
            self.source = "torch.cuda"

    def read(self) -> list[tuple[float | None, float, float]]:
        """Per device: (utilisation %, memory used bytes, memory total bytes); utilisation None if unknown."""
        if self._nvml is not None:
            out = []
            for h in self._handles:
                util = self._nvml.nvmlDeviceGetUtilizationRates(h)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(h)
                out.append((float(util.gpu), float(mem.used), float(mem.total)))
            return out
        import torch

        if not torch.cuda.is_initialized():  # never create a CUDA context from the sampler thread
            return [(None, float("nan"), float("nan")) for _ in self.names]
        out = []
        for i in self.indices:
            free, total = torch.cuda.mem_get_info(i)
            out.append((None, float(total - free), float(total)))
        return out


@dataclass
class SystemSeries:
    """Column-oriented samples. Times are ``time.perf_counter()`` seconds (the step timer's clock)."""

    interval_s: float
    cores: int
    gpu_names: list[str] = field(default_factory=list)
    gpu_source: str | None = None
    t: list[float] = field(default_factory=list)
    cpu_cores: list[list[float]] = field(default_factory=list)  # % busy per core
    iowait: list[float] = field(default_factory=list)  # % of CPU time waiting on I/O
    proc_cpu: list[float] = field(default_factory=list)  # % of one core, training process + children
    proc_rss: list[float] = field(default_factory=list)  # bytes, training process + children
    mem_used_pct: list[float] = field(default_factory=list)  # system memory
    disk_read_bps: list[float] = field(default_factory=list)
    disk_write_bps: list[float] = field(default_factory=list)
    net_recv_bps: list[float] = field(default_factory=list)
    net_sent_bps: list[float] = field(default_factory=list)
    gpu_util: list[list[float]] = field(default_factory=list)  # % per GPU (nan when not measurable)
    gpu_mem_pct: list[list[float]] = field(default_factory=list)  # % per GPU
    gpu_mem_used: list[list[float]] = field(default_factory=list)  # bytes per GPU

    def __len__(self) -> int:
        return len(self.t)

    def array(self, name: str) -> np.ndarray:
        """A column as float array; per-core/per-GPU columns come back as (samples, n)."""
        values = getattr(self, name)
        if name == "cpu_cores":
            width = self.cores
        elif name.startswith("gpu_"):
            width = len(self.gpu_names)
        else:
            return np.asarray(values, dtype=float)
        return np.asarray(values, dtype=float).reshape(-1, width) if values else np.zeros((0, width))

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu_names)

    @property
    def gpu_util_measured(self) -> bool:
        return self.has_gpu and bool(self.gpu_util) and not np.all(np.isnan(self.array("gpu_util")))


class SystemSampler:
    """Samples CPU per core, I/O wait, process-tree CPU and memory, system memory, disk and network
    throughput and (on CUDA machines) GPU utilisation/memory every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 0.5, gpu: GpuMonitor | None = None) -> None:
        """``gpu``: the devices to watch (default: none, as for a CPU run)."""
        if interval_s <= 0:
            raise ValueError(f"system_monitor_interval_millis must be > 0, got {interval_s * 1000:g}")
        self.interval_s = float(interval_s)
        self._gpu = gpu if gpu is not None else GpuMonitor()
        self.series = SystemSeries(self.interval_s, usable_cores(), list(self._gpu.names), self._gpu.source)
        self._cpu_ids = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self._proc = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._proc_cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._rescan = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, Any] = {}
        self._last_rescan = 0.0
        self.thread_cpu_s = 0.0  # CPU time the sampler thread used: its cost to training, at most
        self.thread_wall_s = 0.0

    def start(self) -> SystemSampler:
        """Start sampling (idempotent)."""
        if self._thread is None:
            self._prime()
            self._thread = threading.Thread(target=self._run, name="dogbreed-profiler-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> SystemSeries:
        """Take a last sample, stop the thread and return the series (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=max(5.0, 4 * self.interval_s))
        return self.series

    def rescan_children(self) -> None:
        """Ask for the child processes (data-loader workers) to be re-discovered at the next sample."""
        self._rescan.set()

    def _run(self) -> None:
        started, wall = time.thread_time(), time.perf_counter()
        try:
            while not self._stop.wait(self.interval_s):
                self._safe_sample()
            self._safe_sample()
        finally:
            self.thread_cpu_s = time.thread_time() - started
            self.thread_wall_s = time.perf_counter() - wall

    def _safe_sample(self) -> None:
        try:
            self.sample()
        except Exception:  # the monitor must never take training down
            log.exception("profiler sampler: sample failed")

    def _prime(self) -> None:
        self._last = {"t": time.perf_counter(), **self._counters()}
        self._proc_cpu_last = dict(self._proc_cpu_times())

    def _counters(self) -> dict[str, Any]:
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        return {
            "cores": psutil.cpu_times(percpu=True),
            "disk": (disk.read_bytes, disk.write_bytes) if disk else (0, 0),
            "net": (net.bytes_recv, net.bytes_sent) if net else (0, 0),
        }

    def _proc_cpu_times(self) -> list[tuple[int, float]]:
        now = time.perf_counter()
        if self._rescan.is_set() or now - self._last_rescan > CHILD_RESCAN_S:
            self._rescan.clear()
            self._last_rescan = now
            try:
                found = self._proc.children(recursive=True)
            except psutil.Error:
                found = []
            self._children = {p.pid: self._children.get(p.pid, p) for p in found}
        out = []
        for pid, proc in [(self._proc.pid, self._proc), *self._children.items()]:
            try:
                ct = proc.cpu_times()
                out.append((pid, ct.user + ct.system))
            except psutil.Error:
                self._children.pop(pid, None)
        return out

    def _proc_rss(self) -> float:
        total = 0.0
        for proc in [self._proc, *self._children.values()]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def sample(self) -> None:
        """Append one sample (rates since the previous one)."""
        now = time.perf_counter()
        counters = self._counters()
        dt = max(now - self._last["t"], 1e-6)
        s = self.series
        busy, iowait = _cpu_busy(self._last["cores"], counters["cores"], self._cpu_ids)
        proc_times = self._proc_cpu_times()
        # a newly discovered worker counts from its next sample on (its history is unknown)
        proc_cpu = sum(max(0.0, total - self._proc_cpu_last.get(pid, total)) for pid, total in proc_times)
        self._proc_cpu_last = dict(proc_times)
        s.t.append(now)
        s.cpu_cores.append(busy)
        s.iowait.append(iowait)
        s.proc_cpu.append(100.0 * proc_cpu / dt)
        s.proc_rss.append(self._proc_rss())
        s.mem_used_pct.append(float(psutil.virtual_memory().percent))
        s.disk_read_bps.append((counters["disk"][0] - self._last["disk"][0]) / dt)
        s.disk_write_bps.append((counters["disk"][1] - self._last["disk"][1]) / dt)
        s.net_recv_bps.append((counters["net"][0] - self._last["net"][0]) / dt)
        s.net_sent_bps.append((counters["net"][1] - self._last["net"][1]) / dt)
        if s.gpu_names:
            readings = self._gpu.read()
            s.gpu_util.append([float("nan") if u is None else u for u, _, _ in readings])
            s.gpu_mem_used.append([used for _, used, _ in readings])
            s.gpu_mem_pct.append(
                [100.0 * used / total if total else float("nan") for _, used, total in readings]
            )
        self._last = {"t": now, **counters}


def _cpu_busy(before: list[Any], after: list[Any], cpu_ids: list[int] | None) -> tuple[list[float], float]:
    """Per-core busy % and overall I/O-wait % between two ``psutil.cpu_times(percpu=True)`` readings."""
    busy: list[float] = []
    wait_total = all_total = 0.0
    for i, (a, b) in enumerate(zip(before, after, strict=False)):
        if cpu_ids is not None and i not in cpu_ids:
            continue
        total = sum(b) - sum(a)
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
        busy.append(100.0 * (1.0 - idle / total) if total > 0 else 0.0)
        wait_total += getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0)
        all_total += total
    return busy, (100.0 * wait_total / all_total if all_total > 0 else 0.0)
