"""ProfilerCallback in real (tiny) Lightning fits: data-starved, compute-bound, slow steps, failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dogbreed.cores import usable_cores
from dogbreed.profiler import ProfilerCallback, SystemSampler
from dogbreed.profiler.advice import target_workers
from dogbreed.profiler.timeline import RunContext


class RandomData(Dataset):
    """Random features; ``sleep`` seconds per sample imitates slow storage."""

    def __init__(self, n: int, sleep: float = 0.0) -> None:
        self.n, self.sleep = n, sleep

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.sleep:
            time.sleep(self.sleep)
        return torch.randn(16), i % 4


class Tiny(pl.LightningModule):
    """A linear classifier; ``work`` adds matmuls per step (compute-bound), ``slow_steps`` sleep."""

    def __init__(
        self,
        work: int = 0,
        slow_steps: tuple[int, ...] = (),
        val_sleep: float = 0.0,
        fail_at: int | None = None,
    ) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(16, 4)
        self.work, self.slow_steps, self.val_sleep, self.fail_at = work, set(slow_steps), val_sleep, fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("boom")
        if self.work:
            a = torch.randn(self.work, self.work)
            for _ in range(4):
                a = (a @ a) / self.work
        if self.global_step in self.slow_steps:
            time.sleep(0.5)
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        time.sleep(self.val_sleep)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    tmp_path: Path, module: Tiny, steps: int = 40, sleep: float = 0.0, val: bool = False, **cb_kwargs
) -> ProfilerCallback:
    cb_kwargs = {
        "system_monitor_interval_millis": 40,
        "framework_profile": {"num_steps": 0},
        "html": False,
        **cb_kwargs,
    }
    callback = ProfilerCallback(output_dir=tmp_path / "reports", **cb_kwargs)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        val_check_interval=0.5 if val else None,
    )
    train = DataLoader(RandomData(steps * 8, sleep), batch_size=8, num_workers=0)
    trainer.fit(module, train, DataLoader(RandomData(16), batch_size=8) if val else None)
    return callback


def statuses(callback: ProfilerCallback) -> dict[str, str]:
    return {r.name: r.status for r in callback.results}


def test_data_starved_run_names_the_bottleneck_and_the_fix(tmp_path):
    cb = fit(tmp_path, Tiny(), steps=30, sleep=0.01, html=True)
    st = statuses(cb)
    assert st["IOBottleneck"] == "IssuesFound" and st["Dataloader"] == "IssuesFound"
    assert st["CPUBottleneck"] == "NoIssuesFound"
    fix = f"raise data.num_workers from 0 to {target_workers(RunContext(cores=usable_cores()))}"
    rec = {r.name: r.recommendation.lower() for r in cb.results}
    assert fix in rec["IOBottleneck"] and fix in rec["Dataloader"]
    report = json.loads((tmp_path / "reports" / "profiler.json").read_text())
    assert report["summary"]["bottleneck"] == "data loading"
    assert report["summary"]["data_wait_share_pct"] > 30
    assert (tmp_path / "reports" / "profiler.html").is_file()


def test_compute_bound_run_triggers_no_data_rule(tmp_path):
    cb = fit(tmp_path, Tiny(work=512), steps=30)  # milliseconds of matmul per step: compute dominates
    st = statuses(cb)
    for name in ("IOBottleneck", "CPUBottleneck", "Dataloader"):
        assert st[name] == "NoIssuesFound", [r for r in cb.results if r.name == name]
    assert (
        json.loads((tmp_path / "reports" / "profiler.json").read_text())["summary"]["bottleneck"] == "compute"
    )


def test_bf16_advice_asks_the_probe_precision_auto_uses(tmp_path, monkeypatch):
    from dogbreed import perf

    monkeypatch.setattr(perf, "cpu_supports_bf16", lambda: True)  # as on an AVX512-BF16/AMX CPU
    cb = fit(tmp_path, Tiny(work=512), steps=30)  # compute-bound, in fp32
    assert cb.data.context.bf16_capable and perf.auto_precision("cpu") == "bf16-mixed"
    summary = json.loads((tmp_path / "reports" / "profiler.json").read_text())["summary"]
    assert any("trainer.precision=bf16-mixed" in tip for tip in summary["advice"]), summary


def test_injected_slow_steps_are_found(tmp_path):
    cb = fit(tmp_path, Tiny(slow_steps=(25, 50, 75)), steps=100)
    result = next(r for r in cb.results if r.name == "StepOutlier")
    assert result.status == "IssuesFound"
    found = {int(s) for s in re.search(r"steps ([\d, ]+)", result.message).group(1).split(", ")}
    assert {25, 50, 75} <= found
    assert "computed longer" in result.recommendation


def test_validation_is_not_counted_as_data_wait(tmp_path):
    cb = fit(tmp_path, Tiny(work=64, val_sleep=0.4), steps=20, val=True)
    steps = cb.data.steps.arrays()
    assert steps["wait"].max() < 0.4  # two 0.8 s validations ran mid-epoch, between steps
    assert statuses(cb)["IOBottleneck"] == "NoIssuesFound"


def test_torch_profiler_steps_give_top_operators_and_are_not_judged(tmp_path):
    cb = fit(tmp_path, Tiny(work=32), steps=12, framework_profile={"start_step": 2, "num_steps": 2})
    report = json.loads((tmp_path / "reports" / "profiler.json").read_text())
    assert report["steps"]["profiled"][2:4] == [True, True] and sum(report["steps"]["profiled"]) == 2
    names = [op["name"] for op in report["top_operators"]]
    assert "aten::mm" in names
    assert (tmp_path / "reports" / "torch_trace.json").stat().st_size > 0
    assert report["summary"]["profiled_steps"] == 2 and report["summary"]["steps"] == 10
    cost = cb.data.overhead
    assert (
        cost["hooks_s"] > 0 and cost["sampler_cpu_s"] > 0 and cost["sampler_wall_s"] > cost["sampler_cpu_s"]
    )
    assert report["summary"]["profiler_overhead_pct"] > 0


def test_a_failed_fit_still_writes_the_report(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, Tiny(fail_at=5), steps=20)
    report = json.loads((tmp_path / "reports" / "profiler.json").read_text())
    assert len(report["steps"]["step"]) == 5
    assert {r["name"] for r in report["rules"]} >= {"StepOutlier", "MaxInitializationTime"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"system_monitor_interval_millis": 0}, "system_monitor_interval_millis must be > 0"),
        ({"framework_profile": {"steps": 3}}, r"framework_profile: unknown key\(s\) \['steps'\]"),
        (
            {"rules": {"StepOutlier": {"stdev": 2}}},
            r"callbacks.profiler.rules.StepOutlier: unknown parameter 'stdev'",
        ),
        ({"max_patience_fraction": 2}, "max_patience_fraction must be within"),
    ],
)
def test_bad_settings_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProfilerCallback(**kwargs)


def test_sampler_counts_child_processes_and_stops():
    sampler = SystemSampler(0.02).start()
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        time.sleep(1.0)  # the child allocates its 64 MiB
        sampler.rescan_children()
        time.sleep(0.3)
    finally:
        series = sampler.stop()
        child.kill()
        child.wait()
    assert not sampler._thread.is_alive()
    assert len(series) >= 10 and series.array("cpu_cores").shape[1] == usable_cores()
    rss = series.array("proc_rss")
    assert rss[-1] - rss[0] > 40 * 2**20  # the child's memory joined the training-process total


class FakeGpu:
    names, source = ["gpu0", "gpu1"], "nvml"

    def read(self):
        return [(55.0, 4e9, 16e9), (None, 8e9, 16e9)]


def test_sampler_records_gpu_readings():
    sampler = SystemSampler(0.01, gpu=FakeGpu()).start()
    time.sleep(0.1)
    series = sampler.stop()
    util, mem = series.array("gpu_util"), series.array("gpu_mem_pct")
    assert util.shape[1] == 2 and util[0, 0] == 55.0 and str(util[0, 1]) == "nan"
    assert mem[0].tolist() == [25.0, 50.0] and series.gpu_util_measured


def test_cuda_devices_map_to_nvml_devices_through_cuda_visible_devices():
    from dogbreed.profiler.sampler import GpuMonitor, nvml_device

    assert nvml_device(0, None) == 0 and nvml_device(1, "") == 1
    assert nvml_device(1, "3,5") == 5 and nvml_device(0, "GPU-8f2a, GPU-11") == "GPU-8f2a"
    assert GpuMonitor([]).names == [] and GpuMonitor().source is None  # a CPU run watches no GPU
