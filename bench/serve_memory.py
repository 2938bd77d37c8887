"""What one request can add to ``python -m serve``'s resident memory at the default limits, measured.

    python bench/serve_memory.py                 # every case of tests/image_bytes.py:worst_cases()
    python bench/serve_memory.py --cases "50 MP RGBA WebP"

Each case gets a fresh server (so memory freed but kept by the allocator after one case cannot hide the
next one's cost): start, answer one ordinary photo, read the resident size (idle), reset the peak
(``/proc/PID/clear_refs``), send the case, read the peak (VmHWM). Then the worst case again, sent by as many
clients at once as there are decode workers (``--decode-workers``, 2), the most that decode at the same time.
The model is a random-init MobileNetV2 with 133 classes, as in bench/serve.py. Prints one line per case,
then ``key=value`` lines; writes bench/out/serve_memory.json.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "bench" / "out"


def _from_bench_serve(*names: str) -> list:
    """Helpers of bench/serve.py (a script: importing it as ``serve`` would shadow the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [getattr(module, n) for n in names]


def post(url: str, body: bytes, content_type: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def measure(model: Path, cases: list[tuple[bytes, str]], photo: bytes, threads: str, log: Path) -> dict:
    """Fresh server; peak resident MiB added above idle while ``cases`` are sent at once."""
    from serve.process import LocalServer

    with LocalServer(model, "--no-warmup", "--threads", threads, log_path=log) as server:
        assert post(server.url, photo, "image/jpeg") == 200
        idle = server.memory()["VmRSS"]
        server.reset_peak()
        with ThreadPoolExecutor(len(cases)) as pool:
            statuses = list(pool.map(lambda c: post(server.url, *c), cases))
        added = server.memory()["VmHWM"] - idle
        alive = server.alive() and post(server.url, photo, "image/jpeg") == 200
    return {"statuses": statuses, "idle_mib": idle, "added_mib": added, "alive_after": alive}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--threads", default="1", help="torch threads for the server (default %(default)s)")
    p.add_argument("--decode-workers", type=int, default=2, help="the server's default (%(default)s)")
    p.add_argument("--json", type=Path, default=OUT / "serve_memory.json")
    args = p.parse_args(argv)

    from argparse import Namespace

    from image_bytes import worst_cases

    build_model, photo, write_json = _from_bench_serve("build_model", "photo", "write_json")

    cases = worst_cases()
    names = args.cases.split(",") if args.cases else list(cases)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-memory-") as tmp:
        model, _ = build_model(Namespace(ckpt=None, classes=133, backbone="mobilenet_v2"), Path(tmp))
        body = photo()
        for name in names:
            data, content_type, expected = cases[name]
            r = measure(model, [(data, content_type)], body, args.threads, Path(tmp) / "server.log")
            results[name] = {**r, "expected": expected}
            print(
                f"{name:<40} {r['statuses'][0]} (expected {expected})  +{r['added_mib']:6.0f} MiB", flush=True
            )
        worst = max(results, key=lambda n: results[n]["added_mib"])
        data, content_type, _ = cases[worst]
        together = measure(
            model, [(data, content_type)] * args.decode_workers, body, args.threads, Path(tmp) / "server.log"
        )
        results[f"{args.decode_workers} × {worst} at once"] = together
        print(f"{args.decode_workers} × {worst} at once: {together['statuses']}", end=" ")
        print(f"+{together['added_mib']:.0f} MiB")
    write_json(args.json, results)
    print(f"\nworst_case_one_request_mib={results[worst]['added_mib']:.0f}")
    print(f"worst_case_request={worst}")
    print(f"worst_case_concurrent_mib={together['added_mib']:.0f}")
    single = [r for r in results.values() if "expected" in r]
    print(f"all_as_expected={all(r['statuses'][0] == r['expected'] for r in single)}")
    print(f"server_alive_after_each={all(r['alive_after'] for r in results.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
