"""Training speed: dogbreed vs the seeds' naive script, measured in one run on this machine.

    python bench/train.py                    # (a)+(b) 5 epochs, parity, forward vs matmul peak, (c) sweep
    python bench/train.py --skip-sweep --epochs 3 --classes 5

(a) bench/naive_train.py: ImageFolder, Resize 256, CenterCrop 224, frozen ResNet-50, fp32, SGD, N epochs.
(b) python -m dogbreed.train on the same data and epochs (defaults: feature cache, bf16 where supported),
    from a cold feature cache, including test, export and reports.
(c) 8-trial sweep: the naive script × 8 vs python -m launch.tune backend=local (ResNet-18 to stay in minutes).
(d) fixed cost on a small set (5 classes × 40 train photos, 5 epochs): `import dogbreed.train` alone, and the
    whole run with a warm feature cache (training the head on cached features takes well under a second, so
    its wall time is start-up + test + export + reports); the naive script on the same set for the ratio.
    `python bench/train.py --fixed-only` runs just this.
Both use model weights=null: no ResNet weights exist offline, and the cost per image is the same.
Also: accuracy parity of the fast path vs plain fp32 on the demo data (MobileNetV2, real ImageNet weights),
and backbone forward img/s as a fraction of this CPU's measured matmul peak (ResNet-50 ≈ 8.2 GFLOP/image).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
RESNET50_GFLOP = 8.2


def make_dataset(
    root: Path, classes: int, per_split: dict[str, int], size: tuple[int, int] = (500, 375)
) -> Path:
    """Dog-photo-sized JPEGs (500×375) of pattern classes;
    reused when already generated with the same spec."""
    from dogbreed.data.synthetic import PATTERNS, draw_image

    spec = {"classes": classes, "per_split": per_split, "size": size}
    marker = root / "spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(spec)):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(0)
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"{c + 1:03d}.{PATTERNS[c % len(PATTERNS)][0]}_{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                img = draw_image(c % len(PATTERNS), size[0], rng).crop((0, 0, size[0], size[1]))
                img.save(folder / f"{k:04d}.jpg", quality=90)
    marker.write_text(json.dumps(spec))
    return root


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(
            f"command failed ({result.returncode}): "
            f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return wall, result.stdout


def last_value(text: str, key: str) -> float | None:
    found = re.findall(rf"(?:^|\s){key}=([0-9.eE+-]+)", text)
    return float(found[-1]) if found else None


def dogbreed_cmd(data: Path, epochs: int, out: Path, extra: list[str]) -> list[str]:
    return [
        PY,
        "-m",
        "dogbreed.train",
        "data=folder",
        f"data.root={data}",
        f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping=null",
        f"paths.output_dir={out}",
        *extra,
    ]


def matmul_peak_gflops(dtype_name: str) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps = 3
        started = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - started) / 1e9)
    return best


def forward_throughput(batch: int = 32, reps: int = 3) -> dict[str, float]:
    import torch
    from torchvision import models

    from dogbreed.perf import FeatureExtractor, cpu_supports_bf16

    net = models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    x = torch.randn(batch, 3, 224, 224)
    result = {}
    for name, fast in (("fp32", False), ("fast", True)):
        extractor = FeatureExtractor(net, fast=fast)
        extractor(x)
        started = time.perf_counter()
        for _ in range(reps):
            extractor(x)
        result[name] = batch * reps / (time.perf_counter() - started)
    result["bf16"] = float(cpu_supports_bf16())
    return result


def import_seconds() -> float:
    """Wall time of ``import dogbreed.train`` in a fresh interpreter (the best of two)."""
    code = "import time; t = time.perf_counter(); import dogbreed.train; print(time.perf_counter() - t)"
    return min(float(timed([PY, "-c", code])[1].strip().splitlines()[-1]) for _ in range(2))


def fixed_cost(work: Path, epochs: int, naive: bool) -> dict[str, float]:
    """(d): the small set's import time, warm-cache wall time, and the naive script's wall time on it."""
    data = make_dataset(OUT / "bench-small", 5, {"train": 40, "valid": 10, "test": 10})
    env = {"DOGBREED_CACHE_DIR": str(work / "cache-small")}
    extra = ["model=resnet50", "model.weights=null"]
    cold, _ = timed(dogbreed_cmd(data, epochs, work / "small-cold", extra), env)
    warm, _ = timed(dogbreed_cmd(data, epochs, work / "small-warm", extra), env)
    result = {"import_s": import_seconds(), "cold_wall_s": cold, "warm_wall_s": warm}
    if naive:
        result["naive_wall_s"] = timed([PY, "bench/naive_train.py", str(data), "--epochs", str(epochs)])[0]
        result["ratio_cold"] = result["naive_wall_s"] / cold
        result["ratio_warm"] = result["naive_wall_s"] / warm
    return result


def print_fixed(d: dict[str, float], epochs: int) -> None:
    print(
        f"(d) fixed cost       import dogbreed.train {d['import_s']:.1f} s; small set ({epochs} epochs, "
        f"ResNet-50) cold cache {d['cold_wall_s']:.1f} s, warm cache {d['warm_wall_s']:.1f} s = the fixed "
        "cost (goal ≤ 8 s)"
    )
    if "naive_wall_s" in d:
        print(
            f"                     naive {d['naive_wall_s']:.1f} s: {d['ratio_cold']:.1f}× cold, "
            f"{d['ratio_warm']:.1f}× warm (goal ≥ 10×)"
        )
    print(
        "    command: python -m dogbreed.train data=folder data.root=bench/out/bench-small model=resnet50 "
        f"model.weights=null trainer.max_epochs={epochs} callbacks.early_stopping=null (twice: cold, warm)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--train-per-class", type=int, default=80)
    p.add_argument("--eval-per-class", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument(
        "--naive-sweep-trials",
        type=int,
        default=1,
        help="naive trials actually run for (c); the rest are extrapolated (trials are independent)",
    )
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--skip-fixed", action="store_true", help="skip (d), the small-set fixed cost")
    p.add_argument("--fixed-only", action="store_true", help="run only (d)")
    p.add_argument("--no-naive-fixed", action="store_true", help="(d) without the naive script's run")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.fixed_only:
        work = Path(tempfile.mkdtemp(prefix="bench-fixed-", dir=OUT))
        fixed = fixed_cost(work, args.epochs, not args.no_naive_fixed)
        (OUT / "fixed.json").write_text(json.dumps(fixed, indent=2))
        print_fixed(fixed, args.epochs)
        shutil.rmtree(work, ignore_errors=True)
        return
    per_split = {"train": args.train_per_class, "valid": args.eval_per_class, "test": args.eval_per_class}
    data = make_dataset(OUT / "bench-data", args.classes, per_split)
    n_train = args.classes * args.train_per_class
    work = Path(tempfile.mkdtemp(prefix="bench-train-", dir=OUT))
    report: dict[str, object] = {
        "dataset": {"classes": args.classes, **per_split, "jpeg": "500x375"},
        "epochs": args.epochs,
    }

    print(
        f"(a) naive script, frozen ResNet-50 fp32, {args.epochs} epochs, {n_train} train images …", flush=True
    )
    naive_wall, naive_out = timed([PY, "bench/naive_train.py", str(data), "--epochs", str(args.epochs)])
    print("(b) python -m dogbreed.train, same data and epochs, cold feature cache …", flush=True)
    ours_wall, ours_out = timed(
        dogbreed_cmd(data, args.epochs, work / "ours", ["model=resnet50", "model.weights=null"]),
        env={"DOGBREED_CACHE_DIR": str(work / "cache")},
    )
    naive_acc = json.loads(naive_out.strip().splitlines()[-1])["val_acc"]
    report["a_naive"] = {
        "wall_s": naive_wall,
        "train_img_per_s": n_train * args.epochs / naive_wall,
        "val_acc": naive_acc,
    }
    report["b_dogbreed"] = {
        "wall_s": ours_wall,
        "train_img_per_s": n_train * args.epochs / ours_wall,
        "val_acc": last_value(ours_out, "val_acc"),
    }
    report["ratio_b_over_a"] = naive_wall / ours_wall

    fwd = forward_throughput()
    peak = matmul_peak_gflops("bfloat16" if fwd["bf16"] else "float32")
    limit = peak / RESNET50_GFLOP
    report["forward"] = {
        "fp32_img_per_s": fwd["fp32"],
        "fast_img_per_s": fwd["fast"],
        "matmul_peak_gflops": peak,
        "matmul_bound_img_per_s": limit,
        "fraction_of_limit": fwd["fast"] / limit,
        "peak_dtype": "bf16" if fwd["bf16"] else "fp32",
    }

    if not args.skip_parity:
        print("parity: demo data, fast path vs plain fp32 …", flush=True)
        demo = ["experiment=demo", f"data.root={work / 'demo-data'}", "callbacks.early_stopping=null"]
        env = {"DOGBREED_CACHE_DIR": str(work / "cache")}
        _, fast_out = timed([PY, "-m", "dogbreed.train", *demo, f"paths.output_dir={work / 'p-fast'}"], env)
        _, plain_out = timed(
            [
                PY,
                "-m",
                "dogbreed.train",
                *demo,
                f"paths.output_dir={work / 'p-plain'}",
                "data.cache.enabled=false",
                "trainer.precision=32-true",
                "model.channels_last=false",
            ],
            env,
        )
        fast_acc = json.loads((work / "p-fast" / "metrics.json").read_text())["val_acc"]
        plain_acc = json.loads((work / "p-plain" / "metrics.json").read_text())["val_acc"]
        report["parity"] = {
            "fast_val_acc": fast_acc,
            "plain_fp32_val_acc": plain_acc,
            "diff_points": 100 * (fast_acc - plain_acc),
        }

    if not args.skip_sweep:
        print(
            f"(c) {args.trials}-trial sweep, ResNet-18, 3 epochs: naive ×{args.trials} vs launch.tune "
            "backend=local …",
            flush=True,
        )
        naive_trials = max(1, min(args.naive_sweep_trials, args.trials))
        walls = [
            timed([PY, "bench/naive_train.py", str(data), "--epochs", "3", "--arch", "resnet18"])[0]
            for _ in range(naive_trials)
        ]
        naive_sweep = sum(walls) / naive_trials * args.trials
        sweep_wall, _ = timed(
            [
                PY,
                "-m",
                "launch.tune",
                "backend=local",
                f"tune.max_jobs={args.trials}",
                "data=folder",
                f"data.root={data}",
                "model=resnet18",
                "model.weights=null",
                "trainer.max_epochs=3",
                f"tune.storage=sqlite:///{work / 'study.db'}",
                f"paths.output_dir={work / 'sweep'}",
            ],
            env={"DOGBREED_CACHE_DIR": str(work / "cache-sweep")},
        )
        report["c_sweep"] = {
            "naive_wall_s": naive_sweep,
            "naive_trials_run": naive_trials,
            "dogbreed_wall_s": sweep_wall,
            "ratio": naive_sweep / sweep_wall,
        }

    if not args.skip_fixed:
        print("(d) fixed cost on a small set …", flush=True)
        report["d_fixed"] = fixed_cost(work, args.epochs, not args.no_naive_fixed)

    (OUT / "train.json").write_text(json.dumps(report, indent=2))
    print()
    a, b = report["a_naive"], report["b_dogbreed"]
    print(f"(a) naive            {a['wall_s']:8.1f} s  {a['train_img_per_s']:7.1f} train img/s")
    print(f"(b) dogbreed.train   {b['wall_s']:8.1f} s  {b['train_img_per_s']:7.1f} train img/s")
    print(f"    ratio (a)/(b)    {report['ratio_b_over_a']:8.1f}×  (goal ≥ 10× for 5 epochs)")
    f = report["forward"]
    print(
        f"forward ResNet-50    fp32 {f['fp32_img_per_s']:.1f} img/s, fast path {f['fast_img_per_s']:.1f} "
        f"img/s = {100 * f['fraction_of_limit']:.0f}% of the {f['peak_dtype']} matmul-bound limit "
        f"({f['matmul_peak_gflops']:.0f} GFLOP/s → {f['matmul_bound_img_per_s']:.1f} img/s; goal ≥ 60%)"
    )
    if "parity" in report:
        q = report["parity"]
        print(
            f"parity (demo)        fast val_acc {q['fast_val_acc']:.4f} vs plain fp32 "
            f"{q['plain_fp32_val_acc']:.4f} ({q['diff_points']:+.2f} points; goal within 1)"
        )
    if "c_sweep" in report:
        c = report["c_sweep"]
        print(
            f"(c) sweep            naive {c['naive_wall_s']:.1f} s (measured {c['naive_trials_run']} "
            f"trial(s), ×{args.trials}) vs dogbreed {c['dogbreed_wall_s']:.1f} s = {c['ratio']:.1f}×  "
            "(goal ≥ 30×)"
        )
    if "d_fixed" in report:
        print_fixed(report["d_fixed"], args.epochs)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
