"""``python -m serve.predict IMAGE_OR_DIR... [--endpoint URL | --model PATH | --sagemaker-endpoint NAME]
[--top-k 5] [--out predictions.csv|.jsonl]``

Prints the top breeds for each image (folders and quoted globs are expanded to their images):

    dog.jpg: Affenpinscher 93.1%
        93.1%  001.Affenpinscher
         3.2%  036.Briard

With ``--out``, scores in bulk instead: one row per image (path, label, probability, top_k, error) appended
to a CSV or JSON Lines file as it goes, a progress line with ETA on stderr, images/s (and, for an ImageFolder
split, accuracy against the folder names) at the end. A rerun skips the images already in the file, so an
interrupted run (Ctrl-C, kill) continues where it stopped.

--endpoint URL              a running ``python -m serve`` (default http://127.0.0.1:8080)
--model PATH                no server: load model.pt (or its folder, or model.tar.gz) here;
                            torch + Pillow only
--sagemaker-endpoint NAME   a deployed SageMaker endpoint (boto3; AWS_REGION / AWS_ENDPOINT_URL apply)

Exit status 0 when every image was classified, 1 when any failed (each failure is printed to stderr, or is
a row with an error), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from serve.rows import PredictionsFile, RowsError
from serve.score_folder import (
    LocalScorer,
    PredictError,
    RemoteScorer,
    accuracy,
    find_images,
    pending,
    report,
    score,
    thread_split,
    usable_cores,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_CONCURRENCY = 8


def payload(image: bytes, top_k: int) -> bytes:
    return json.dumps(
        {"instances": [{"b64": base64.b64encode(image).decode("ascii")}], "top_k": top_k}
    ).encode()


def _first_prediction(body: bytes) -> dict:
    try:
        return json.loads(body)["predictions"][0]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise PredictError(f"unexpected answer {body[:200]!r}") from e


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


def http_predictor(endpoint: str, top_k: int, timeout: float = 60.0) -> Callable[[bytes], dict]:
    """A function posting one image to ``endpoint`` (``…/invocations`` is added when the URL has no path)."""
    url = endpoint.rstrip("/")
    if urllib.parse.urlsplit(url).path in ("", "/"):
        url += "/invocations"

    def predict(image: bytes) -> dict:
        request = urllib.request.Request(
            url,
            data=payload(image, top_k),
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _first_prediction(response.read())
        except urllib.error.HTTPError as e:
            raise PredictError(f"HTTP {e.code}: {_error_text(e.read())}") from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PredictError(f"cannot reach {url}: {reason} (is `python -m serve` running?)") from e

    return predict


def _model_pt(path: Path, workdir: str) -> str:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.lstrip("./") == "model.pt"), None)
            if member is None:
                raise PredictError(f"{path} has no model.pt inside")
            tar.extract(member, workdir, filter="data")
        return os.path.join(workdir, member.name)
    return str(path)


def load_artifact(model: str, device: str | None = None):
    """model.pt, the folder holding it, or model.tar.gz → the TorchScript model (``serve.inference``)."""
    from serve.inference import load_torchscript

    if not os.path.exists(model):
        raise PredictError(f"--model {model}: no such file or folder (pass outputs/…/model/model.pt)")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            return load_torchscript(_model_pt(Path(model), workdir), device)
    except PredictError:
        raise
    except Exception as e:  # noqa: BLE001 — a broken model file: say which
        raise PredictError(f"cannot load {model}: {type(e).__name__}: {e}") from e


def local_predictor(model: str, top_k: int) -> Callable[[bytes], dict]:
    """A function classifying one image in this process with ``serve.inference`` (torch + Pillow)."""
    from serve.inference import Batch, decode_image, predict_fn

    loaded = load_artifact(model)
    min_side = int(loaded.resize_size) if hasattr(loaded, "resize_size") else None

    def predict(image: bytes) -> dict:
        return predict_fn(Batch([decode_image(image, "file", min_side=min_side)], top_k), loaded)[0]

    return predict


def sagemaker_predictor(name: str, top_k: int, client=None) -> Callable[[bytes], dict]:
    """A function invoking the SageMaker endpoint ``name`` (``client``: a boto3 sagemaker-runtime client)."""
    if client is None:
        try:
            import boto3
        except ImportError as e:
            raise PredictError("--sagemaker-endpoint needs boto3: pip install 'dogbreed[sagemaker]'") from e
        client = boto3.client("sagemaker-runtime")
    from botocore.exceptions import BotoCoreError, ClientError

    def predict(image: bytes) -> dict:
        try:
            response = client.invoke_endpoint(
                EndpointName=name,
                ContentType="application/json",
                Accept="application/json",
                Body=payload(image, top_k),
            )
        except ClientError as e:
            err = e.response.get("Error", {})
            status = e.response.get("OriginalStatusCode")
            detail = e.response.get("OriginalMessage") or err.get("Message", str(e))
            raise PredictError(
                f"endpoint {name}: {err.get('Code', 'error')}{f' {status}' if status else ''}: {detail}"
            ) from e
        except BotoCoreError as e:
            raise PredictError(f"endpoint {name}: {e}") from e
        return _first_prediction(response["Body"].read())

    return predict


def format_prediction(name: str, prediction: dict) -> str:
    lines = [f"{name}: {prediction['label']} {100 * prediction['probability']:.1f}%"]
    lines += [f"    {100 * t['probability']:5.1f}%  {t['label']}" for t in prediction["top_k"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serve.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, folders (searched recursively) or quoted globs ('photos/**/*.jpg')",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--endpoint", help=f"URL of a running `python -m serve` (default {DEFAULT_ENDPOINT})")
    where.add_argument("--model", help="model.pt, its folder, or model.tar.gz: classify in this process")
    where.add_argument("--sagemaker-endpoint", metavar="NAME", help="name of a deployed SageMaker endpoint")
    p.add_argument(
        "--top-k", type=int, default=5, help="how many breeds to print per image (default %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per HTTP request (default %(default)s)"
    )
    bulk = p.add_argument_group("bulk scoring (--out)")
    bulk.add_argument(
        "--out",
        metavar="FILE",
        help="write one row per image to FILE (.csv or .jsonl) instead of printing; a rerun skips the "
        "images already in it",
    )
    bulk.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        help="with --model: most images per forward pass (default %(default)s); the warm-up times every "
        "size up to it (or up to √(images/10), so it costs under a tenth of the run) and keeps the largest "
        "whose cost per image is within 10%% of the best",
    )
    bulk.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="with --model: skip the warm-up and use --max-batch-size as given",
    )
    bulk.add_argument(
        "--precision",
        default="auto",
        help="with --model: auto, fp32-frozen, fp32, int8 or bf16, as `python -m serve --precision` (its "
        "--help gives each one's measured speed); auto = fp32-frozen (default %(default)s)",
    )
    bulk.add_argument(
        "--calibration",
        default=None,
        help="with --model --precision int8: a folder of images like the scored ones (see python -m serve)",
    )
    bulk.add_argument(
        "--device", default=None, help="with --model: cpu or cuda (default: cuda when available)"
    )
    bulk.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        help="with --model: threads reading, decoding and preprocessing images (default: half the cores, "
        "at least 2)",
    )
    bulk.add_argument(
        "--threads",
        type=int,
        default=None,
        help="with --model: torch threads for the network (default: what the decoders leave, at least 1)",
    )
    bulk.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="with an endpoint: requests in flight (default %(default)s)",
    )
    args = p.parse_args(argv)
    for name in ("top_k", "max_batch_size", "decode_workers", "threads", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.out and args.model:
        from serve.runner import PRECISIONS  # torch: only where the model runs here

        if args.precision not in PRECISIONS:
            p.error(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    return args


def _predictor(args: argparse.Namespace) -> Callable[[bytes], dict]:
    if args.model:
        return local_predictor(args.model, args.top_k)
    if args.sagemaker_endpoint:
        return sagemaker_predictor(args.sagemaker_endpoint, args.top_k)
    return http_predictor(args.endpoint or DEFAULT_ENDPOINT, args.top_k, args.timeout)


def print_each(names: Sequence[str], predict: Callable[[bytes], dict], as_json: bool) -> int:
    """Classify one image at a time and print it; failures go to stderr. Returns the exit status."""
    failed = 0
    for name in names:
        try:
            image = Path(name).read_bytes()
        except OSError as e:
            failed += 1
            print(f"{name}: cannot read ({e.strerror or e})", file=sys.stderr)
            continue
        try:
            prediction = predict(image)
        except Exception as e:  # noqa: BLE001 — report per image, keep going, fail at the end
            failed += 1
            print(f"{name}: {e}", file=sys.stderr)
            continue
        print(
            json.dumps({"image": name, **prediction}) if as_json else format_prediction(name, prediction),
            flush=True,
        )
    return 1 if failed else 0


def local_scorer(args: argparse.Namespace, images: int) -> tuple[LocalScorer, list[str]]:
    """The model loaded, torch's threads set and the batch size picked for scoring ``images`` images."""
    import torch

    from serve.runner import Runner

    decoders, threads = thread_split(usable_cores())
    workers = args.decode_workers or decoders
    torch.set_num_threads(args.threads or threads)
    started = time.perf_counter()
    runner = Runner(load_artifact(args.model, args.device), args.precision, args.calibration)
    batch_size = args.max_batch_size
    if args.warmup:
        # Timing sizes 1…n costs n(n+1) forward passes: keep that under a tenth of the images to score.
        batch_size = runner.warmup(max(1, min(args.max_batch_size, math.isqrt(images // 10))))
        sample = runner.preprocess(torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8))
        for _ in range(2):  # TorchScript profiles the network's own graph on its first calls too
            runner.forward([sample] * batch_size)
    print(f"model {args.model} ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return LocalScorer(runner, args.top_k, batch_size, workers), runner.class_names


def score_into(args: argparse.Namespace) -> int:
    """``--out``: score every image into the predictions file; returns the exit status."""
    sources = find_images(args.images)
    with PredictionsFile.open(args.out) as out:
        if args.model:
            scorer, class_names = local_scorer(args, len(pending(sources, out)))
        else:
            where = args.sagemaker_endpoint or args.endpoint or DEFAULT_ENDPOINT
            scorer, class_names = RemoteScorer(_predictor(args), args.concurrency, where), None
        print(f"scoring into {out.path} with {scorer.describe()}", file=sys.stderr)
        summary = score(sources, scorer, out)
        found = accuracy(sources, out.rows, class_names) if class_names else None
        print(report(summary, out, found, args.top_k), flush=True)
        paths = {os.path.abspath(s.path) for s in sources}
        failed = any(r["error"] is not None and os.path.abspath(r["path"]) in paths for r in out.rows)
    return 130 if summary.interrupted else 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    polite = threading.current_thread() is threading.main_thread()
    # kill stops like Ctrl-C, and Ctrl-C stops cleanly even where the shell started us with SIGINT ignored
    # (a background job of a script)
    previous = (
        {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)} if polite else {}
    )
    try:
        if args.out:
            return score_into(args)
        return print_each([s.path for s in find_images(args.images)], _predictor(args), args.json)
    except (PredictError, RowsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
