"""What an interruption costs at the defaults: SIGTERM (spot reclaim, ``kill``) vs SIGKILL, mid-epoch.

Trains the demo (its defaults: frozen MobileNetV2 from cached features) three times in fresh processes on
the same generated data: uninterrupted; stopped by SIGTERM after ``--at-step`` and resumed with the
printed command; killed by SIGKILL at the same point and resumed from the newest ``last.ckpt``. Prints the
steps each trained again, the extra wall time (the restart) and each test accuracy. ``--step-seconds``
makes every step last that long (a head-only demo step takes milliseconds; real ones do not), so the
signal lands where it is sent.

    python bench/interrupt.py --at-step 18
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

STARTUP: list[float] = []
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "tests")}  # slow_steps


def run(args: list[str], cwd: Path, stop: tuple[int, int] | None = None) -> tuple[int, str, float]:
    """``python -m dogbreed.train ARGS`` → (status, output, wall seconds); ``stop=(signum, step)`` sends
    the signal once that optimizer step has finished. ``STARTUP`` collects each process's seconds from
    its start to its first training step (what a restart costs before it trains again)."""
    started = time.perf_counter()
    first_step = None
    proc = subprocess.Popen(
        [sys.executable, "-m", "dogbreed.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env=ENV,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if first_step is None and line.startswith("slow_steps: "):
            first_step = time.perf_counter() - started
            STARTUP.append(first_step)
        if stop and line.startswith("slow_steps: ") and line.split("step=")[-1].strip() == str(stop[1]):
            proc.send_signal(stop[0])
            break
    rest, _ = proc.communicate(timeout=3600)
    return proc.returncode, "".join(lines) + rest, time.perf_counter() - started


def steps(output: str) -> int:
    return output.count("slow_steps: epoch=")


def accuracy(out: Path) -> float:
    return float(json.loads((out / "metrics.json").read_text())["test_acc"])


def interrupted(base: list[str], out: Path, work: Path, signum: int, at_step: int) -> dict:
    """Interrupt at ``at_step`` with ``signum``, resume (the printed command, or the newest last.ckpt)."""
    status, output, wall = run([*base, f"paths.output_dir={out}"], work, (signum, at_step))
    trained = steps(output)
    line = next((x for x in output.splitlines() if x.startswith("Interrupted by")), None)
    last = out / "checkpoints" / "last.ckpt"
    if line:
        resume = shlex.split(line.split("resume with: ", 1)[1])[3:]
    else:  # SIGKILL: nothing printed; resume from whatever last.ckpt the run had written
        resume = [*base, f"paths.output_dir={out}", *([f"ckpt_path={last}"] if last.is_file() else [])]
    resumed_from = torch.load(last, weights_only=True)["global_step"] if last.is_file() else 0
    status2, output2, wall2 = run(resume, work)
    assert status2 == 0, output2
    return {
        "exit_status": status,
        "resumed_from_step": resumed_from,
        "steps": trained + steps(output2),
        "wall_s": wall + wall2,
        "test_acc": accuracy(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at-step", type=int, default=18, help="interrupt after this optimizer step")
    parser.add_argument("--freeze", default="frozen", choices=["frozen", "full"])
    parser.add_argument("--epochs", type=int, default=4, help="the demo's")
    parser.add_argument("--step-seconds", type=float, default=0.2)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dogbreed-bench-interrupt-"))
    base = [
        "experiment=demo",
        f"data.root={work / 'synthetic'}",
        f"model.freeze={opts.freeze}",
        f"trainer.max_epochs={opts.epochs}",
        "callbacks.early_stopping=null",
        "logger=none",
        "evaluate.enabled=false",
        "export.enabled=false",
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        f"+callbacks.slow.seconds={opts.step_seconds}",
    ]
    status, output, _ = run([*base, "debug=fast_dev_run", f"paths.output_dir={work / 'warm-up'}"], work)
    assert status == 0, output  # the feature cache is filled: every run below finds it warm
    STARTUP.clear()
    status, output, wall = run([*base, f"paths.output_dir={work / 'plain'}"], work)
    assert status == 0, output
    total = steps(output)
    results = {"uninterrupted": {"steps": total, "wall_s": wall, "test_acc": accuracy(work / "plain")}}
    for name, signum in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
        results[name] = interrupted(base, work / name, work, signum, opts.at_step)
    for name, r in results.items():
        extra = r["wall_s"] - results["uninterrupted"]["wall_s"]
        print(
            f"{name:13s} steps trained {r['steps']:4d} (again: {r['steps'] - total:3d})  "
            f"wall {r['wall_s']:6.1f} s (+{extra:5.1f} s)  test_acc {r['test_acc']:.4f}"
            + (
                f"  exit {r['exit_status']}, resumed at step {r['resumed_from_step']}"
                if "exit_status" in r
                else ""
            )
        )
    print(f"start-up to the first training step, per process: {', '.join(f'{t:.1f}' for t in STARTUP)} s")
    print(json.dumps({**vars(opts), **results, "startup_s": STARTUP}, indent=2))


if __name__ == "__main__":
    main()
