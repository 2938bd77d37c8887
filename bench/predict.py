"""Scoring a folder: ``python -m serve.predict DIR --out`` vs the endpoint path vs the one-at-a-time loop,
one run.

    python bench/predict.py                          # 300 photo-sized JPEGs, MobileNetV2, 133 classes
    python bench/predict.py --images 1000 --backbone resnet50 --rounds 1

Every way scores the same generated JPEGs (500×375, the dog dataset's typical size) with the same model.pt
(random init: no download; cost per image is the same) and prints ``images_per_s=``; each runs in its own
process, so none inherits another's torch threads:
  folder            ``python -m serve.predict DIR --model model.pt --out p.csv``, its defaults (decoder
                    threads, batched network, precision auto)
  folder-processes  the same pipeline with decoding + preprocessing in worker processes instead of threads
  endpoint          ``python -m serve`` (precision auto, torch threads as the folder scorer picks) and the
                    ``--endpoint`` client (``--concurrency``, default 8)
  loop              the plain loop ``python -m serve.predict IMAGE...`` runs: read, decode, classify one at a
                    time, torch's default threads (on the first ``--loop-images``: it is slow)
  loop-1-thread     the same with one torch thread: what is left when no thread waits for a busy core
Model loading and warm-up are not counted; the ways run interleaved, ``--rounds`` times. Prints each way's
median rate and the median of each round's ratios, then ``key=value`` lines; writes bench/out/predict.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/ itself, whose serve.py would shadow the serve package
OUT = ROOT / "bench" / "out"
WAYS = ("folder", "folder-processes", "endpoint", "loop", "loop-1-thread")


def generate(folder: Path, n: int, size: tuple[int, int] = (500, 375)) -> list[Path]:
    from dogbreed.data.synthetic import PATTERNS, draw_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        draw_image(i % len(PATTERNS), max(size), rng).crop((0, 0, *size)).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def rate(output: str) -> float:
    """The ``images_per_s=`` a child printed."""
    for line in output.splitlines():
        if line.startswith("images_per_s="):
            return float(line.split("=", 1)[1])
    raise RuntimeError(f"no images_per_s= in the output:\n{output[-3000:]}")


def child(*args: str) -> str:
    """Run ``python ARGS`` from the repository; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


# ---------------------------------------------------------------- ways that need their own child process

_runner = None


def _init_worker(model: str) -> None:
    global _runner
    import torch

    from serve.predict import load_artifact
    from serve.runner import Runner

    torch.set_num_threads(1)
    _runner = Runner(load_artifact(model, "cpu"), "fp32")


def _prepare_in_process(path: str):
    from serve.inference import decode_image

    return _runner.preprocess(decode_image(Path(path).read_bytes(), "file", min_side=_runner.resize_size))


def folder_processes(model: str, folder: str, out: str) -> None:
    """The folder scorer at its defaults, but each image prepared in a worker process."""
    from serve.predict import local_scorer, parse_args
    from serve.rows import PredictionsFile
    from serve.score_folder import find_images, score

    sources = find_images([folder])
    scorer, _ = local_scorer(parse_args([folder, "--model", model, "--out", out]), len(sources))
    spawn = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    pool = ProcessPoolExecutor(scorer.workers, spawn, initializer=_init_worker, initargs=(model,))
    list(pool.map(_prepare_in_process, [s.path for s in sources[: scorer.workers]]))  # started
    scorer.prepare = lambda path: pool.submit(_prepare_in_process, path).result()
    with PredictionsFile.open(out) as predictions:
        summary = score(sources, scorer, predictions)
    pool.shutdown()
    print(f"images_per_s={summary.images_per_s:.2f}")


def loop(model: str, folder: str, images: str, threads: str) -> None:
    """What ``python -m serve.predict IMAGE... --model`` does, timed without the model load."""
    import torch

    from serve.predict import local_predictor
    from serve.score_folder import find_images

    if int(threads):
        torch.set_num_threads(int(threads))
    predict = local_predictor(model, 5)
    paths = [s.path for s in find_images([folder])][: int(images)]
    predict(Path(paths[0]).read_bytes())  # as the others, not counting the first call's set-up
    started = time.perf_counter()
    for path in paths:
        predict(Path(path).read_bytes())
    print(f"images_per_s={len(paths) / (time.perf_counter() - started):.2f}")


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="JPEGs to score (default %(default)s)")
    p.add_argument("--backbone", default="mobilenet_v2", help="random-init backbone (default %(default)s)")
    p.add_argument("--classes", type=int, default=133, help="number of classes (default %(default)s)")
    p.add_argument("--ckpt", help="bench a trained checkpoint instead of a random-init model")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="endpoint client (default %(default)s)")
    p.add_argument("--loop-images", type=int, default=60, help="images the loops score (default %(default)s)")
    p.add_argument("--ways", default=",".join(WAYS), help="which ways to run (default %(default)s)")
    p.add_argument("--json", type=Path, default=OUT / "predict.json", help="results (default %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.serve import build_model
    from dogbreed.atomic import write_json
    from serve.process import LocalServer
    from serve.score_folder import thread_split, usable_cores

    args = parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    if unknown := set(ways) - set(WAYS):
        raise SystemExit(f"--ways: unknown {', '.join(sorted(unknown))} (choose from {', '.join(WAYS)})")
    cores = usable_cores()
    results: dict = {"config": {k: str(v) for k, v in vars(args).items()}, "cores": cores, "rounds": []}
    results["load_before"] = os.getloadavg()[0]  # a shared machine: say how busy it was
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(tmp)
        model_pt, _ = build_model(args, work)
        folder = work / "images"
        generate(folder, args.images)
        server = None
        if "endpoint" in ways:  # the folder scorer's thread split, so the two pipelines get the same cores
            threads = str(thread_split(cores)[1])
            server = LocalServer(
                model_pt, "--precision", "auto", "--threads", threads, log_path=work / "s.log"
            )
            server.start()
        try:
            for r in range(args.rounds):
                measured = {}
                for way in ways:
                    out = str(work / f"{way}-{r}.csv")
                    if way == "folder":
                        text = child(
                            "-m", "serve.predict", str(folder), "--model", str(model_pt), "--out", out
                        )
                    elif way == "folder-processes":
                        text = child(__file__, "folder-processes", str(model_pt), str(folder), out)
                    elif way == "endpoint":
                        cmd = ["-m", "serve.predict", str(folder), "--endpoint", server.url, "--out", out]
                        text = child(*cmd, "--concurrency", str(args.concurrency))
                    else:
                        threads = "1" if way == "loop-1-thread" else "0"
                        text = child(
                            __file__, "loop", str(model_pt), str(folder), str(args.loop_images), threads
                        )
                    measured[way] = rate(text)
                    print(f"round {r + 1}: {way:<16} {measured[way]:7.1f} images/s", flush=True)
                results["rounds"].append(measured)
        finally:
            if server is not None:
                server.stop()
    results["load_after"] = os.getloadavg()[0]
    loops = f" (the loops: the first {min(args.images, args.loop_images)})" if "loop" in args.ways else ""
    report(results, ways, f"{args.images} images{loops}")
    write_json(args.json, results)
    return 0


def report(results: dict, ways: list[str], images: str) -> None:
    # Medians over the rounds: on a shared machine one round of one way can be hit by someone else's job.
    # A ratio is the median of the rounds' own ratios (the ways of one round ran minutes apart, not hours).
    rounds = results["rounds"]
    rates = {w: statistics.median(r[w] for r in rounds) for w in ways}
    results["images_per_s"] = rates
    print(
        f"\n{images}, {results['cores']} cores, load average {results['load_before']:.1f} before and "
        f"{results['load_after']:.1f} after"
    )
    for way in ways:
        print(f"  {way:<16} {rates[way]:7.1f} images/s")
    lines = {f"{w.replace('-', '_')}_images_per_s": rates[w] for w in ways}
    if "folder" in rates:
        for other in (w for w in ways if w != "folder"):
            ratio = statistics.median(r["folder"] / r[other] for r in rounds)
            print(f"  folder / {other}: {ratio:.2f}×")
            lines[f"folder_over_{other.replace('-', '_')}"] = ratio
    print()
    for key, value in lines.items():
        print(f"{key}={value:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "folder-processes":
        folder_processes(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "loop":
        loop(*sys.argv[2:])
    else:
        sys.exit(main())
