"""``python -m serve --model PATH [--host 127.0.0.1] [--port 8080] …`` — the local SageMaker-style endpoint.

    python -m serve --model outputs/…/model/model.pt
    curl -s --data-binary @dog.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/invocations
    open http://127.0.0.1:8080/      # drop a photo, see the top-5 breeds

Logs go to stderr: uvicorn's start-up lines, then one JSON access line per request.
``--port 0`` picks a free port; the ``listening`` JSON line on stderr names it.
The flags are the fields of ``serve.settings.Settings``; the request limits default to the
``DOGBREED_*`` environment variables that the SageMaker handler reads.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from collections.abc import Sequence

from serve.settings import Settings, parse_settings


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Command line → validated :class:`Settings` (exit 2 naming the flag on a bad value)."""
    return parse_settings(list(argv) if argv is not None else None, __doc__)


def allow_connections(settings: Settings) -> None:
    """Raise the open-file limit so ``--max-connections`` sockets (plus the process's own files) fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            logging.getLogger("serve").warning(
                "open-file limit %d is below --max-connections %d + 256", target, settings.max_connections
            )


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    import uvicorn

    from serve.guard import guarded_protocol
    from serve.server import create_app

    settings = parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stderr)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    allow_connections(settings)
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
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.header_timeout_s, 64 * 1024, settings.max_connections),
        limit_concurrency=settings.max_connections + 1,  # the guard keeps idle ones below it
        backlog=2048,
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    server.run()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
