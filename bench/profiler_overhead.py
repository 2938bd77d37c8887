"""What does the profiler cost? Training speed with and without it, measured in one run.

    python bench/profiler_overhead.py                 # a few minutes on 2 busy cores
    python bench/profiler_overhead.py --steps 6000 --fit-pairs 0

Workload: a small CNN on random 3×32×32 tensors (batch 32, no loader workers) trained by Lightning on the
CPU, everything in this process.

1. Sampling, interleaved inside one fit: phases of ``--phase-steps`` steps rotate through plain, the
   system sampler (the same ``SystemSampler`` the callback runs) at 500 ms, plain, the sampler at 50 ms,
   plain, and a control phase that changes nothing. Each phase's mean step time is divided by the mean of
   the plain phases on either side, and the median printed (also for process CPU time, which includes
   the sampler thread). Short, interleaved phases cancel the drift of other work on a shared machine,
   which moves whole fits by far more than the effect; the control shows the method's own bias and
   spread, and each sampler ratio is also given net of it.
2. One fit with the full ``ProfilerCallback`` at its config defaults: its self-measured cost (the share
   of a core its sampler thread used, plus time in its step hooks), microseconds per step in the hooks,
   and the seconds the report takes after the fit.
3. ``--fit-pairs`` whole fits with/without the callback (order alternating), for reference: on a busy
   machine their spread is larger than the effect.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from dogbreed.profiler import ProfilerCallback, SystemSampler
from dogbreed.profiler.report import profiler_overhead_pct

GOAL_PCT = 3.0


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


class SamplerPhases(pl.Callback):
    """Times every step (batch start to next batch start) while rotating through phases of
    ``phase_steps`` steps: none, sampler A, none, sampler B, none, control (nothing, an A/A check)."""

    def __init__(self, intervals_s: dict[str, float | None], phase_steps: int) -> None:
        self.variants = list(intervals_s)
        self.intervals_s, self.phase_steps = intervals_s, phase_steps
        self.cycle = [v for name in self.variants for v in (None, name)]
        self.starts: list[float] = []
        self.cpu: list[float] = []  # process CPU time (all threads, the sampler's included)
        self.sampler: SystemSampler | None = None

    def phase(self, step: int) -> str | None:
        return self.cycle[(step // self.phase_steps) % len(self.cycle)]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        i = len(self.starts)
        if i % self.phase_steps or self.phase(i) is None:
            if (
                i % self.phase_steps == 0 and self.sampler is not None
            ):  # stopping is charged to the sampler phase
                self.sampler.stop()
                self.sampler = None
            self.starts.append(time.perf_counter())
            self.cpu.append(time.process_time())
            return
        self.starts.append(time.perf_counter())  # clock first: starting is charged to the sampler phase
        self.cpu.append(time.process_time())
        interval = self.intervals_s[self.phase(i)]
        if interval is not None:
            self.sampler = SystemSampler(interval).start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def ratios(self, variant: str, clock: str = "wall", skip_cycles: int = 1) -> list[float]:
        """Mean step time of each ``variant`` phase over the mean of the two plain phases around it."""
        durations = np.diff(self.starts if clock == "wall" else self.cpu)
        k, n = self.phase_steps, len(np.diff(self.starts)) // self.phase_steps
        mean = [durations[p * k : (p + 1) * k].mean() for p in range(n)]
        out = []
        for p in range(skip_cycles * len(self.cycle), n - 1):
            if self.cycle[p % len(self.cycle)] == variant:
                out.append(float(mean[p] / ((mean[p - 1] + mean[p + 1]) / 2)))
        return out


def fit(steps: int, batch: int, callbacks: list[pl.Callback]) -> float:
    """Seconds of one fit, including whatever the callbacks do after it."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * batch, 3, 32, 32), torch.randint(0, 10, (steps * batch,)))
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
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="steps of the interleaved fit (default 3000)")
    parser.add_argument("--phase-steps", type=int, default=20, help="steps per phase (default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--fit-pairs", type=int, default=2, help="whole-fit with/without pairs (default 2; 0 = skip)"
    )
    args = parser.parse_args()

    fit(20, args.batch_size, [])  # warm-up: imports, allocator, thread pools
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}; ratio = "
        "with / without"
    )
    print(
        f"1. one fit of {args.steps} steps, rotating phases of {args.phase_steps} steps; each phase over its "
        "plain neighbours:"
    )
    variants = {
        "sampler every 500 ms (default)": 0.5,
        "sampler every 50 ms": 0.05,
        "control: nothing (A/A)": None,
    }
    phases = SamplerPhases(variants, args.phase_steps)
    fit(args.steps, args.batch_size, [phases])
    control = statistics.median(phases.ratios("control: nothing (A/A)", "wall"))
    for name in variants:
        r, c = phases.ratios(name, "wall"), phases.ratios(name, "cpu")
        q1, med, q3 = np.quantile(r, [0.25, 0.5, 0.75])
        net = (
            f"; net of the control {med / control:.4f} ({100 * (med / control - 1):+.2f}%)"
            if "control" not in name
            else ""
        )
        print(
            f"   {name:32s} step-time ratio {med:.4f} ({100 * (med - 1):+.2f}%; median of {len(r)}, IQR "
            f"{q1:.3f}-{q3:.3f}); process CPU per step {statistics.median(c):.4f}{net}"
        )

    out = Path(tempfile.mkdtemp(prefix="profiler-bench-"))
    cb = ProfilerCallback(output_dir=out)
    seconds = fit(args.steps // 4, args.batch_size, [cb])
    o, steps = cb.data.overhead, len(cb.data.steps)
    loop = cb.data.steps.end[-1] - cb.data.steps.wait_start[0]
    print(f"2. ProfilerCallback at its config defaults, one fit of {steps} steps ({seconds:.1f} s):")
    print(
        f"   self-measured cost {profiler_overhead_pct(cb.data):.3f}% of the training (sampler thread "
        f"{1000 * o['sampler_cpu_s']:.0f} ms CPU in {o['sampler_wall_s']:.1f} s; hooks "
        f"{1e6 * o['hooks_s'] / steps:.0f} µs/step = {100 * o['hooks_s'] / loop:.3f}% of the loop); report "
        f"written {seconds - loop:.1f} s beyond the loop"
    )
    cost = profiler_overhead_pct(cb.data)
    print(f"   goal: < {GOAL_PCT:g}% -> {'met' if cost < GOAL_PCT else 'NOT met'} by the self-measured cost")

    if args.fit_pairs:
        ratios = []
        for i in range(args.fit_pairs):
            runs = {}
            for with_profiler in (i % 2 == 0, i % 2 != 0):
                extra = (
                    [ProfilerCallback(output_dir=out, framework_profile={"num_steps": 0}, html=False)]
                    if with_profiler
                    else []
                )
                runs[with_profiler] = fit(args.steps // 10, args.batch_size, extra)
            ratios.append(runs[True] / runs[False])
        print(
            f"3. whole fits ({args.steps // 10} steps, sampler 500 ms, JSON only) with/without, "
            f"{args.fit_pairs} pairs: median {statistics.median(ratios):.3f}, range "
            f"{min(ratios):.3f}-{max(ratios):.3f} (noise on a shared machine)"
        )


if __name__ == "__main__":
    main()
