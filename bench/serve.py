"""Serving speed: ``python -m serve`` (micro-batched) vs a one-request-at-a-time eager-PyTorch handler,
one run.

    # MobileNetV2, 133 classes, c = 1, 8, 32, soak 2,000 @ 16
    python bench/serve.py --threads 1 --requests 240
    python bench/serve.py --backbone resnet50 --precisions fp32

``--threads 1`` on a small shared machine: with two OpenMP threads per process, a forward pass stalls
whenever another process holds one of the cores (10× slower measured here under load).

Servers, all on 127.0.0.1, all fed the same 500×375 JPEG (the dog dataset's typical size) as image/jpeg:
  baseline   ThreadingHTTPServer + a lock: decode, eager ``ExportedClassifier`` forward (batch 1), answer —
             one request at a time, as the seeds' handler (or TorchServe with one worker, batch 1) does.
  ours-fp32-frozen  ``python -m serve`` (the default, auto = fp32-frozen): frozen channels_last fp32 network,
             micro-batched (the warm-up picks the batch cap).
  ours-fp32  ``--precision fp32``: the artifact's own numbers, micro-batched.
  ours-int8  ``--precision int8 --calibration DIR`` (16 generated photos; ``--int8-min-agreement`` 0.001: a
             random-init model's top-1 is noise, so here only its speed is measured; agreement on a trained
             model: ``python bench/serve.py --ckpt … `` prints it from the server's log).
  ours-bf16  ``--precision bf16``: bf16 frozen channels_last network (same top-1), where bf16 is native.
The model is random-init (``weights=None``: no download; cost per image is the same) unless ``--ckpt``.
"decode+forward alone" is measured in this process on the same image and model, batch 1, no HTTP.
Prints p50/p99 latency and throughput per level, the ratios, the soak result, then ``key=value`` lines;
writes bench/out/serve.json. Bounded: fixed request counts, every request has a timeout.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def photo(size: tuple[int, int] = (500, 375)) -> bytes:
    from dogbreed.data.synthetic import draw_image

    img = draw_image(3, max(size), random.Random(0)).crop((0, 0, *size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def photos(folder: Path, n: int = 16) -> Path:
    """``n`` different generated photo-sized JPEGs in ``folder`` (int8's calibration images)."""
    from dogbreed.data.synthetic import draw_image

    folder.mkdir(parents=True)
    rng = random.Random(1)
    for i in range(n):
        draw_image(i % 8, 500, rng).crop((0, 0, 500, 375)).save(folder / f"{i:02d}.jpg", quality=90)
    return folder


def build_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path]:
    """(model.pt for our server, pickled eager ExportedClassifier for the baseline) with the same weights."""
    import torch

    from dogbreed.export import export_torchscript, wrap
    from dogbreed.model import BreedClassifier
    from dogbreed.predict import load_checkpoint

    if args.ckpt:
        model = load_checkpoint(args.ckpt)
    else:
        names = [f"{i + 1:03d}.Breed_{i + 1}" for i in range(args.classes)]
        model = BreedClassifier(names, backbone=args.backbone, weights=None, allow_random_init=True).eval()
    model_pt = export_torchscript(model, workdir / "model.pt")
    eager = workdir / "eager.pt"
    torch.save(wrap(model), eager)
    return model_pt, eager


# ---------------------------------------------------------------- the baseline server (a child process)


def baseline_server(eager_path: str, threads: int | None) -> None:
    """Serve POST /invocations one request at a time with the eager model; print the URL on stdout."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import torch

    from serve.inference import RequestError, decode_image, top_predictions

    if threads:
        torch.set_num_threads(threads)
    model = torch.load(eager_path, weights_only=False).eval()
    names, min_side = list(model.class_names), int(model.resize_size)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every answer

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 — http.server's naming
            self.reply(200, {"status": "ready"})

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                try:
                    image = decode_image(body, min_side=min_side)
                    with torch.no_grad():
                        probs = model.predict_images([image])
                except RequestError as e:
                    self.reply(e.status, {"error": e.error})
                    return
            self.reply(200, {"predictions": top_predictions(probs, names)})

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # socketserver's 5 would reset connections at concurrency 32

    server = Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


class Baseline:
    """The baseline server as a child process, stopped like serve.process.LocalServer."""

    def __init__(self, eager: Path, threads: int | None) -> None:
        import subprocess

        cmd = [sys.executable, __file__, "baseline-server", str(eager), str(threads or 0)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("baseline server did not start")
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------------- load generation


def load(url: str, body: bytes, concurrency: int, requests: int, timeout: float = 60.0) -> dict:
    """``requests`` POSTs from ``concurrency`` keep-alive connections: latencies (s), errors, wall time."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        headers = {"Content-Type": "image/jpeg"}
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            started = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and b'"predictions"' in data
            except (OSError, http.client.HTTPException) as e:
                ok, data = False, repr(e).encode()
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors.append(data[:200].decode(errors="replace"))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": errors, "wall_s": time.perf_counter() - started}


def summarise(runs: list[dict], concurrency: int) -> dict:
    """Latency percentiles and throughput over several rounds of ``load``."""
    ms = sorted(x * 1000.0 for r in runs for x in r["latencies"])
    errors = [e for r in runs for e in r["errors"]]
    wall = sum(r["wall_s"] for r in runs)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")

    return {
        "concurrency": concurrency,
        "ok": len(ms),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "throughput_rps": len(ms) / wall,
        "wall_s": wall,
    }


class Reference:
    """Decode + forward (batch 1) in this process, no HTTP: the floor for latency at concurrency 1."""

    def __init__(self, model: object, body: bytes, precision: str | None, **runner_args: object) -> None:
        from serve.inference import decode_image
        from serve.runner import Runner

        self.decode = decode_image
        self.body = body
        if precision is None:  # the baseline's eager module
            import torch

            def run(images: list) -> object:
                with torch.no_grad():
                    return model.predict_images(images)

            self.run, self.min_side = run, int(model.resize_size)
        else:
            runner = Runner(model, precision, **runner_args)
            runner.warmup(1)
            self.run, self.min_side = runner, runner.resize_size
        self.times_ms: list[float] = []

    def measure(self, runs: int) -> None:
        for _ in range(runs):
            started = time.perf_counter()
            self.run([self.decode(self.body, min_side=self.min_side)])
            self.times_ms.append((time.perf_counter() - started) * 1000.0)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def soak(url: str, pid: int, body: bytes, total: int, concurrency: int) -> dict:
    """``total`` requests at ``concurrency``; resident memory after a warm-up tenth vs at the end."""
    warm = max(concurrency, total // 10)
    first = load(url, body, concurrency, warm)
    start_rss = rss_mb(pid)
    rest = load(url, body, concurrency, total - warm)
    end_rss = rss_mb(pid)
    summary = summarise([rest], concurrency)
    return {
        **summary,
        "requests": total,
        "errors": len(first["errors"]) + len(rest["errors"]),
        "first_error": (first["errors"] or rest["errors"] or [None])[0],
        "rss_start_mb": start_rss,
        "rss_end_mb": end_rss,
        "rss_growth_pct": 100.0 * (end_rss - start_rss) / start_rss,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backbone", default="mobilenet_v2", help="torchvision backbone, random init (default %(default)s)"
    )
    p.add_argument("--classes", type=int, default=133, help="number of classes (default %(default)s)")
    p.add_argument("--ckpt", help="bench a trained checkpoint instead of a random-init model")
    p.add_argument(
        "--calibration",
        type=Path,
        help="int8's --calibration folder (default: 16 generated photos); with --ckpt, int8 then needs its "
        "real 0.99 agreement on the held-out half, and the server's log line with it is printed",
    )
    p.add_argument("--levels", default="1,8,32", help="client concurrency levels (default %(default)s)")
    p.add_argument(
        "--requests", type=int, default=120, help="requests per level and server (default %(default)s)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="interleaved rounds the requests are split into (default %(default)s)",
    )
    p.add_argument(
        "--precisions",
        default=None,
        help="our server's --precision values to bench (default: fp32-frozen,fp32,int8, plus bf16 where the "
        "CPU has native bf16 kernels: emulated bf16 warms up for minutes)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every server and the reference (default: torch's)",
    )
    p.add_argument(
        "--max-batch-size", type=int, default=16, help="our server's --max-batch-size (default %(default)s)"
    )
    p.add_argument(
        "--soak", type=int, default=2000, help="soak requests against ours (0 = skip; default %(default)s)"
    )
    p.add_argument("--soak-concurrency", type=int, default=16, help="default %(default)s")
    p.add_argument(
        "--soak-precision",
        default="fp32-frozen",
        help="our server's precision during the soak (default %(default)s)",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="our servers use --max-batch-size as given (the warm-up's pick is noisy on a busy machine)",
    )
    p.add_argument(
        "--compare-to",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before main`): its `python -m serve` --precision "
        "fp32 joins the rounds as 'other-fp32', so a change is measured against it in the same machine state",
    )
    p.add_argument("--json", type=Path, default=OUT / "serve.json", help="results file (default %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from serve.inference import load_torchscript
    from serve.process import LocalServer

    levels = [int(c) for c in args.levels.split(",")]
    if args.precisions is None:
        from serve.runner import cpu_supports_bf16

        args.precisions = "fp32-frozen,fp32,int8" + (",bf16" if cpu_supports_bf16() else "")
    precisions = [p for p in args.precisions.split(",") if p]
    threads = ["--threads", str(args.threads)] if args.threads else []
    threads += ["--no-warmup"] if args.no_warmup else []
    if args.threads:
        torch.set_num_threads(args.threads)
    body = photo()
    results: dict = {"config": {k: str(v) for k, v in vars(args).items()}, "levels": {}, "reference_ms": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_pt, eager = build_model(args, Path(tmp))
        scripted = load_torchscript(str(model_pt), "cpu")
        references = {"eager": Reference(torch.load(eager, weights_only=False).eval(), body, None)}
        calibration = args.calibration or photos(Path(tmp) / "calibration")
        int8_args = {"calibration": str(calibration), "min_agreement": 0.99 if args.ckpt else 0.001}
        references.update(
            {p: Reference(scripted, body, p, **(int8_args if p == "int8" else {})) for p in precisions}
        )
        servers: dict = {"baseline": Baseline(eager, args.threads)}
        try:
            for precision in precisions:
                int8 = ["--calibration", str(calibration)] if precision == "int8" else []
                int8 += ["--int8-min-agreement", "0.001"] if precision == "int8" and not args.ckpt else []
                servers[f"ours-{precision}"] = LocalServer(
                    model_pt,
                    "--precision",
                    precision,
                    *int8,
                    "--max-batch-size",
                    str(args.max_batch_size),
                    *threads,
                    log_path=Path(tmp) / f"ours-{precision}.log",
                ).start()
            if args.compare_to:
                servers["other-fp32"] = LocalServer(
                    model_pt,
                    "--precision",
                    "fp32",
                    "--max-batch-size",
                    str(args.max_batch_size),
                    *threads,
                    log_path=Path(tmp) / "other-fp32.log",
                    root=args.compare_to,
                ).start()
            for name, server in servers.items():  # the warm-up's choice decides much of the throughput
                chosen = re.search(r"batches of up to (\d+)", server.log()) if name != "baseline" else None
                if chosen:
                    results.setdefault("batch_cap", {})[name] = int(chosen.group(1))
                    print(f"{name}: batches of up to {chosen.group(1)}", flush=True)
                agrees = re.search(r"int8: .*", server.log()) if name == "ours-int8" else None
                if agrees:
                    print(f"{name}: {agrees.group(0)}", flush=True)
            for c in levels:
                n = max(args.requests, 4 * c) // args.rounds
                runs: dict[str, list[dict]] = {name: [] for name in servers}
                for server in servers.values():
                    load(server.url, body, c, 2 * c)  # warm the connections and this batch size
                for _ in range(args.rounds):  # interleaved, so load from elsewhere hits every server alike
                    if c == 1:
                        for reference in references.values():
                            reference.measure(max(3, n // 2))
                    for name, server in servers.items():
                        runs[name].append(load(server.url, body, c, n))
                results["levels"][str(c)] = {name: summarise(r, c) for name, r in runs.items()}
            results["reference_ms"] = {
                name: ref.median_ms for name, ref in references.items() if ref.times_ms
            }
            if args.soak:
                soak_server = servers.get(f"ours-{args.soak_precision}")
                if soak_server is None:
                    raise SystemExit(f"--soak-precision {args.soak_precision} is not in --precisions")
                results["soak"] = soak(
                    soak_server.url, soak_server.pid, body, args.soak, args.soak_concurrency
                )
        finally:
            for server in servers.values():
                server.stop()
    report(results, levels, precisions)
    write_json(args.json, results)
    return 0


def report(results: dict, levels: list[int], precisions: list[str]) -> None:
    print(f"{'server':<17} {'c':>3} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for c in levels:
        for name, r in results["levels"][str(c)].items():
            print(
                f"{name:<17} {c:>3} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['throughput_rps']:>8.1f} "
                f"{r['errors']:>6}"
            )
    lines = {}
    refs = results["reference_ms"]
    if "eager" in refs:
        p50 = results["levels"]["1"]["baseline"]["p50_ms"]
        print(
            f"\nbaseline: decode+forward alone (eager) {refs['eager']:.1f} ms; p50 at c=1 {p50:.1f} ms = "
            f"{p50 / refs['eager']:.2f}×"
        )
    for precision in precisions:
        ref = refs.get(precision, float("nan"))
        p50 = (
            results["levels"]["1"][f"ours-{precision}"]["p50_ms"]
            if "1" in results["levels"]
            else float("nan")
        )
        print(
            f"\nours-{precision}: decode+forward alone {ref:.1f} ms; p50 at c=1 {p50:.1f} ms = "
            f"{p50 / ref:.2f}× (goal ≤ 1.15×)"
        )
        lines[f"p50_c1_over_decode_forward_{precision}"] = p50 / ref
        for c in levels:
            level = results["levels"][str(c)]
            ratio = level[f"ours-{precision}"]["throughput_rps"] / level["baseline"]["throughput_rps"]
            goal = " (goal ≥ 2×)" if c == 8 else ""
            print(f"  throughput vs baseline at c={c}: {ratio:.2f}×{goal}")
            lines[f"throughput_ratio_c{c}_{precision}"] = ratio
    for c in levels:  # --compare-to: this checkout's fp32 server against the other's, same rounds
        level = results["levels"][str(c)]
        if "other-fp32" in level and "ours-fp32" in level:
            ratio = level["ours-fp32"]["throughput_rps"] / level["other-fp32"]["throughput_rps"]
            print(f"  throughput vs --compare-to at c={c}: {ratio:.2f}×")
            lines[f"throughput_ratio_c{c}_vs_other"] = ratio
    if "soak" in results:
        s = results["soak"]
        print(
            f"\nsoak: {s['requests']} requests at c={s['concurrency']}: {s['errors']} errors, "
            f"RSS {s['rss_start_mb']:.0f} → {s['rss_end_mb']:.0f} MB ({s['rss_growth_pct']:+.1f}%, goal < "
            f"10%), p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, {s['throughput_rps']:.1f} req/s"
        )
        lines.update(soak_errors=s["errors"], soak_rss_growth_pct=s["rss_growth_pct"])
    print(f"\ncommand: python bench/serve.py {' '.join(sys.argv[1:])}")
    for key, value in lines.items():
        print(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "baseline-server":
        baseline_server(sys.argv[2], int(sys.argv[3]) or None)
    else:
        sys.exit(main())
