"""``python -m serve.predict IMAGE... [--endpoint URL | --model PATH | --sagemaker-endpoint NAME]
[--top-k 5]``

Prints the top breeds for each image:

    dog.jpg: Affenpinscher 93.1%
        93.1%  001.Affenpinscher
         3.2%  036.Briard

--endpoint URL              a running ``python -m serve`` (default http://127.0.0.1:8080)
--model PATH                no server: load model.pt (or its folder, or model.tar.gz) here;
                            torch + Pillow only
--sagemaker-endpoint NAME   a deployed SageMaker endpoint (boto3; AWS_REGION / AWS_ENDPOINT_URL apply)

Exit status 0 when every image was classified, 1 when any failed (each failure is printed to stderr).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


class PredictError(RuntimeError):
    """One image could not be classified; the message says why."""


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


def local_predictor(model: str, top_k: int) -> Callable[[bytes], dict]:
    """A function classifying one image in this process with ``serve.inference`` (torch + Pillow)."""
    from serve.inference import Batch, decode_image, load_torchscript, predict_fn

    if not os.path.exists(model):
        raise PredictError(f"--model {model}: no such file or folder (pass outputs/…/model/model.pt)")
    with tempfile.TemporaryDirectory() as workdir:
        loaded = load_torchscript(_model_pt(Path(model), workdir))
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
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
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
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error("--top-k must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.model:
            predict = local_predictor(args.model, args.top_k)
        elif args.sagemaker_endpoint:
            predict = sagemaker_predictor(args.sagemaker_endpoint, args.top_k)
        else:
            predict = http_predictor(args.endpoint or DEFAULT_ENDPOINT, args.top_k, args.timeout)
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 — a broken model file: say which and stop
        print(f"error: cannot load {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    failed = 0
    for name in args.images:
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
            json.dumps({"image": name, **prediction}) if args.json else format_prediction(name, prediction),
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
