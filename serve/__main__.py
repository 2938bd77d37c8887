"""``python -m serve --model PATH [--host 127.0.0.1] [--port 8080] …`` — the local SageMaker-style endpoint.

    python -m serve --model outputs/…/model/model.pt
    curl -s --data-binary @dog.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/invocations
    open http://127.0.0.1:8080/      # drop a photo, see the top-5 breeds

Logs go to stderr: uvicorn's start-up lines, then one JSON access line per request.
``--port 0`` picks a free port; the ``listening`` JSON line on stderr names it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from serve.runner import PRECISIONS
from serve.server import Settings, create_app

DEFAULTS = Settings(model="")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model.pt (TorchScript export) or the folder holding it")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument(
        "--port", type=int, default=8080, help="port (default 8080, SageMaker's; 0 = any free port)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help="most images per forward pass (default %(default)s); the warm-up times every size up to it "
        "and lowers it to the largest whose cost per image is within 10%% of the best",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULTS.max_wait_ms,
        help="longest a forming batch waits for requests still being decoded (default %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help="images waiting before new requests get 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULTS.max_body_bytes,
        help="larger bodies get 413 (default %(default)s = 10 MiB)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULTS.max_image_pixels,
        help="images with more pixels (width × height, read from the header) get 413 (default %(default)s)",
    )
    p.add_argument(
        "--max-instances",
        type=int,
        default=DEFAULTS.max_instances,
        help="most images in one JSON request (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout_s,
        help=(
            "seconds a request may take: body upload (408 after) plus queueing and inference (503 after) "
            "(default %(default)s)"
        ),
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULTS.precision,
        help="fp32 = exactly the artifact's numbers; bf16 = about 2× the fp32 throughput on CPUs with "
        "AVX512-BF16/AMX, same top-1, probabilities within ~0.1; auto = bf16 where native "
        "(default %(default)s)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=DEFAULTS.decode_workers,
        help="threads decoding images (default %(default)s)",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip timing every batch size before /ping is ready (then --max-batch-size is used as given)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default %(default)s",
    )
    args = p.parse_args(argv)
    if not os.path.exists(args.model):
        p.error(f"--model {args.model}: no such file or folder (pass outputs/…/model/model.pt)")
    for name in (
        "max_batch_size",
        "max_queue",
        "max_body_bytes",
        "max_image_pixels",
        "max_instances",
        "decode_workers",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout <= 0 or args.max_wait_ms < 0:
        p.error("--timeout must be > 0 and --max-wait-ms ≥ 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        model=args.model,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_image_pixels=args.max_image_pixels,
        max_instances=args.max_instances,
        timeout_s=args.timeout,
        precision=args.precision,
        device=args.device,
        decode_workers=args.decode_workers,
        warmup=args.warmup,
    )
    failures: list[str] = []

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    logging.getLogger("serve").info(
                        json.dumps({"event": "listening", "url": f"http://{host}:{port}"})
                    )

    def fail(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_failure=fail),
        host=args.host,
        port=args.port,
        access_log=False,
        log_config=None,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    server.run()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
