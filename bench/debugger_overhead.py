"""How much does the DebuggerCallback cost per training step? Prints ratios measured in this one run.

    python bench/debugger_overhead.py                       # MobileNetV2, full fine-tuning, 96 px, batch 16
    python bench/debugger_overhead.py --freeze frozen --steps 60 --repeats 5

Two measurements of the same thing:

1. A/B: the same BreedClassifier trains on random tensors without the callback, with it (smdebug off)
   and with it plus a local smdebug hook, the configurations interleaved ``--repeats`` times so machine
   noise hits all alike. A step's time is the wall time between consecutive batch starts (forward,
   backward, optimizer, every callback). The mean counts, not the median: the Debugger works on save
   steps (every ``--save-interval``) and that cost must be amortised, not hidden.
2. Accounting: inside the "debugger" runs, the time spent in the callback's hooks and in its forward
   hooks, divided by the step time of the same steps. On a shared, noisy machine this is the stable
   number; (1) shows it is not missing anything.

Times are process CPU time by default (``--clock cpu``: all threads of this process), which a busy shared
machine disturbs far less than wall time (``--clock wall``), with one torch thread (``--threads 1``) so that
OpenMP threads spinning while they wait for a descheduled sibling do not count as work. The first
``--warmup`` steps of each run are dropped (default 12: PoorWeightInitialization records every one of its
first ``steps=10`` steps, a one-time cost printed separately). Goal: < 5% of step time.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from dogbreed.debug import DebuggerCallback
from dogbreed.model import BreedClassifier

CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
now = CLOCK["cpu"]


class StepTimer(pl.Callback):
    """Time between consecutive training-batch starts (a whole step including every callback)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.starts.append(now())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(now())

    def step_times(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)][warmup:]


HOOKS = (
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_end",
)


def account(callback: DebuggerCallback) -> defaultdict[int, float]:
    """Wrap the callback's per-step hooks and its ActivationProbe's hooks; seconds spent, by step."""
    spent: defaultdict[int, float] = defaultdict(float)

    def timed(fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[callback._step] += now() - start

        return wrapper

    for name in HOOKS:
        setattr(callback, name, timed(getattr(callback, name)))
    on_train_start = callback.on_train_start

    def wrap_probe(*args: Any) -> None:
        on_train_start(*args)
        probe = callback._probe
        if probe is not None:
            pre, post = probe._pre_hook, probe._post_hook
            probe._pre_hook = lambda name: timed(pre(name))
            probe._post_hook = lambda name: timed(post(name))

    callback.on_train_start = wrap_probe
    return spent


def run(
    config: str, args: argparse.Namespace, data: TensorDataset, workdir: Path, accounts: list
) -> list[float]:
    gc.collect()  # every configuration starts from a clean heap, not the previous run's garbage
    torch.manual_seed(0)
    model = BreedClassifier(
        class_names=[f"c{i}" for i in range(args.classes)],
        backbone=args.backbone,
        weights=None,
        freeze=args.freeze,
        lr=1e-3,
        head={"type": "linear", "dropout": 0.0},
    )
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    if config != "none":
        debugger = DebuggerCallback(
            output_dir=workdir / config / "reports",
            train={"save_interval": args.save_interval},
            smdebug="local" if config == "debugger+smdebug" else False,
            smdebug_dir=workdir / config / "debug-output",
        )
        if config == "debugger":
            accounts.append((account(debugger), timer))
        callbacks.append(debugger)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=args.steps + args.warmup,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True))
    return timer.step_times(args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--freeze", default="full", choices=["frozen", "full"])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--save-interval", type=int, default=10, help="callbacks.debugger.train.save_interval"
    )
    parser.add_argument("--configs", nargs="+", default=["none", "debugger", "debugger+smdebug"])
    parser.add_argument(
        "--clock", choices=sorted(CLOCK), default="cpu", help="process CPU time (default) or wall time"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no OpenMP spin-waits inflating CPU time)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global now
    now = CLOCK[args.clock]
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("dogbreed.debug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    n = args.batch_size * (args.steps + args.warmup + 1)
    data = TensorDataset(
        torch.randn(n, 3, args.image_size, args.image_size), torch.randint(0, args.classes, (n,))
    )
    times: dict[str, list[float]] = {c: [] for c in args.configs}
    accounts: list[tuple[defaultdict[int, float], StepTimer]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for config in args.configs:
                times[config].extend(run(config, args, data, Path(tmp) / f"r{repeat}", accounts))
    print(
        f"# {args.backbone} freeze={args.freeze} {args.image_size}px batch={args.batch_size} "
        f"save_interval={args.save_interval} torch threads={torch.get_num_threads()} clock={args.clock}; "
        f"{args.repeats} x {args.steps} steps per configuration"
    )
    base = statistics.fmean(times["none"]) if "none" in times else None
    for config, values in times.items():
        mean = statistics.fmean(values)
        line = (
            f"{config:18s} mean step {1000 * mean:8.2f} ms  median {1000 * statistics.median(values):8.2f} ms"
        )
        if base:
            line += f"  ratio {mean / base:.3f} ({100 * (mean / base - 1):+.1f}%)"
        print(line)
    if accounts:
        steady_spent = steady_time = early_spent = early_time = 0.0
        for spent, timer in accounts:
            durations = timer.step_times(0)
            for step, duration in enumerate(durations):
                if step >= args.warmup:
                    steady_spent, steady_time = steady_spent + spent[step], steady_time + duration
                else:
                    early_spent, early_time = early_spent + spent[step], early_time + duration
        steps = len(accounts) * args.steps
        print(
            f"accounting: debugger hooks {1000 * steady_spent / steps:.2f} ms per step = "
            f"{100 * steady_spent / steady_time:.2f}% of step time (first {args.warmup} steps: "
            f"{100 * early_spent / max(early_time, 1e-9):.1f}%)"
        )
        print(f"debugger_accounted_overhead_ratio={1 + steady_spent / (steady_time - steady_spent):.4f}")
    if base and "debugger" in times:
        print(f"debugger_overhead_ratio={statistics.fmean(times['debugger']) / base:.4f}")
    if base and "debugger+smdebug" in times:
        print(f"debugger_smdebug_overhead_ratio={statistics.fmean(times['debugger+smdebug']) / base:.4f}")


if __name__ == "__main__":
    main()
