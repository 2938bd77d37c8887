"""What does the profiler cost? The same short training with and without ``ProfilerCallback``, measured in one run.

    python bench/profiler_overhead.py                   # 5 interleaved pairs per variant, 120 steps each
    python bench/profiler_overhead.py --repeats 9 --steps 200

Workload: a small CNN on random 3×64×64 tensors (batch 32, no data-loader workers) through Lightning on
the CPU; every fit runs in this process. Only the training loop (``on_train_start`` → ``on_train_end``) is
timed, so the report written after the fit is shown separately. Runs are interleaved (A/B, order
alternating) and the median of the per-pair ratios is printed, because other processes on the machine
move single runs by several percent; on a busy machine that noise is larger than the effect, so each
profiled run's self-measured cost is printed too: the share of a core its sampler thread used (thread
CPU time / its lifetime) plus the share of the training loop spent in its step hooks. Variants: the sampler + step timing at the default 500 ms, the same
at 50 ms (10× the sampling), and the config default that also runs torch.profiler for 3 steps.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from dogbreed.profiler import ProfilerCallback
from dogbreed.profiler.report import profiler_overhead_pct

GOAL = 0.03


class SmallCNN(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(64, 10),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class LoopClock(pl.Callback):
    """Wall and process CPU time of the training loop only."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(
    steps: int, batch: int, profiler: dict[str, Any] | None, out: Path
) -> tuple[float, float, float, float]:
    """(loop wall s, loop CPU s, report s, the profiler's self-measured cost %) of one fit."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * batch, 3, 64, 64), torch.randint(0, 10, (steps * batch,)))
    clock = LoopClock()
    callbacks: list[pl.Callback] = [clock]
    profiler_cb = ProfilerCallback(output_dir=out, **profiler) if profiler is not None else None
    if profiler_cb is not None:
        callbacks.append(profiler_cb)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(SmallCNN(), DataLoader(data, batch_size=batch, shuffle=True))
    cost = (
        profiler_overhead_pct(profiler_cb.data)
        if profiler_cb is not None and profiler_cb.data
        else float("nan")
    )
    return clock.wall, clock.cpu, time.perf_counter() - started - clock.wall, cost or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=120, help="training steps per fit (default 120)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved with/without pairs per variant (default 5)"
    )
    args = parser.parse_args()

    variants = {
        "sampler 500 ms + step timing": {
            "system_monitor_interval_millis": 500,
            "framework_profile": {"num_steps": 0},
        },
        "sampler 50 ms + step timing": {
            "system_monitor_interval_millis": 50,
            "framework_profile": {"num_steps": 0},
        },
        "config default (+ torch.profiler 3 steps)": {"system_monitor_interval_millis": 500},
    }
    run(20, args.batch_size, None, Path(tempfile.mkdtemp()))  # warm-up: imports, allocator, thread pools
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps × batch {args.batch_size}, "
        f"{args.repeats} interleaved pairs per variant; ratio = with profiler / without (training loop only)"
    )
    for name, settings in variants.items():
        wall, cpu, report, cost = [], [], [], []
        for i in range(args.repeats):
            out = Path(tempfile.mkdtemp(prefix="profiler-bench-"))
            order = [None, settings] if i % 2 == 0 else [settings, None]
            timings = {id(p): run(args.steps, args.batch_size, p, out) for p in order}
            base, prof = timings[id(None)], timings[id(settings)]
            wall.append(prof[0] / base[0])
            cpu.append(prof[1] / base[1])
            report.append(prof[2] - base[2])
            cost.append(prof[3])
        w, c = statistics.median(wall), statistics.median(cost)
        print(
            f"{name}:\n  A/B wall ratio {w:.4f} ({100 * (w - 1):+.2f}%; pairs {min(wall):.3f}-{max(wall):.3f}), "
            f"CPU-time ratio {statistics.median(cpu):.4f}, report written in {statistics.median(report):.2f} s after the fit\n"
            f"  self-measured cost (sampler core share + step hooks) {c:.3f}% "
            f"[{'within' if c < 100 * GOAL else 'ABOVE'} the {100 * GOAL:.0f}% goal]"
        )


if __name__ == "__main__":
    main()
