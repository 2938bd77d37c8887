"""The local endpoint: FastAPI on uvicorn, SageMaker's contract, micro-batched inference off the event loop.

``GET /ping`` (200 once the model is loaded, else 503), ``POST /invocations`` (same requests and answers as
``serve/inference.py`` on SageMaker), ``GET /`` (a page to try a photo), ``GET /stats`` (batching counters).
Every error is JSON ``{"error": …}``; every request gets one JSON access-log line with its latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources

import torch
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.batching import MicroBatcher, QueueFullError, StoppedError
from serve.inference import (
    IMAGE_TYPES,
    JSON_TYPE,
    Batch,
    RequestError,
    check_accept,
    decode_request,
    load_model,
    output_fn,
    top_predictions,
)
from serve.runner import Runner

log = logging.getLogger("serve")
access_log = logging.getLogger("serve.access")
CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never sent
DRAIN_BYTES = 16 * 2**20  # read (and drop) this much of an oversize body so the client gets its 413


@dataclass
class Settings:
    """Everything ``python -m serve`` can set; see ``python -m serve --help``."""

    model: str
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_bytes: int = 10 * 2**20
    max_image_pixels: int = 50_000_000
    max_instances: int = 64
    timeout_s: float = 30.0
    precision: str = "fp32"
    device: str | None = None
    decode_workers: int = 2
    warmup: bool = True


def error(status: int, message: str, close: bool = False, retry_after: int | None = None) -> Response:
    headers = {"Connection": "close"} if close else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(json.dumps({"error": message}), status, headers=headers, media_type=JSON_TYPE)


class Engine:
    """Loads the model in a background thread, then owns the runner, the batcher and the decode pool."""

    def __init__(self, settings: Settings, on_failure: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.on_failure = on_failure
        self.runner: Runner | None = None
        self.batcher: MicroBatcher | None = None
        self.failure: str | None = None
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        self._loader = threading.Thread(target=self._load, name="model-loader", daemon=True)

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def start(self) -> None:
        self._loader.start()

    def _load(self) -> None:
        s = self.settings
        try:
            started = time.perf_counter()
            runner = Runner(load_model(s.model, s.device), s.precision)
            batch_size = runner.warmup(s.max_batch_size) if s.warmup else s.max_batch_size
            self.runner = runner
            self.batcher = MicroBatcher(runner, batch_size, s.max_wait_ms / 1000.0, s.max_queue)  # now ready
            log.info(
                "model ready: %s (%d classes, %s, batches of up to %d) in %.1fs",
                s.model,
                len(runner.class_names),
                runner.describe(),
                batch_size,
                time.perf_counter() - started,
            )
        except Exception as e:  # noqa: BLE001 — reported through /ping and on_failure
            self.failure = f"model {s.model} failed to load: {e}"
            log.exception(self.failure)
            if self.on_failure:
                self.on_failure(self.failure)

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)


class AccessLog:
    """ASGI middleware: one JSON line per request (status, latency, bytes, images, error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        info: dict = {"status": None, "bytes_in": 0, "bytes_out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            info["bytes_in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
            info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except BaseException:
            info["status"] = info["status"] or 500
            raise
        finally:
            info["status"] = info["status"] or CLIENT_CLOSED
            client = scope.get("client")
            record = {
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "method": scope["method"],
                "path": scope["path"],
                **info,
                "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
            }
            record.update({k: state[k] for k in ("images", "error") if k in state})
            access_log.info(json.dumps(record))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; over ``limit`` bytes → 413.

    Up to ``DRAIN_BYTES`` beyond the limit are read and dropped before answering (as nginx's lingering
    close does): closing a socket with unread data makes the kernel reset the connection, and the
    client would see "connection reset" instead of the 413.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit + DRAIN_BYTES:
            raise RequestError(
                413, f"body is {int(declared):,} bytes, over the limit of {limit:,}; send a smaller image"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + DRAIN_BYTES:
            break
    if size > limit:
        raise RequestError(413, f"body is over the limit of {limit:,} bytes; send a smaller image")
    return b"".join(chunks)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_results(futures: list[Future], request: Request, timeout: float) -> list:
    """Results of the batcher's futures; cancels them on timeout (TimeoutError) or disconnect
    (ClientDisconnect)."""
    results = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait(
            {results, gone}, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    if results in done:
        return results.result()
    results.cancel()
    for f in futures:
        f.cancel()
    if gone in done:
        raise ClientDisconnect()
    raise TimeoutError


async def invoke(request: Request, engine: Engine) -> Response:
    """POST /invocations: read, decode (thread pool), batch-infer (worker thread), answer."""
    s = engine.settings
    deadline = time.monotonic() + s.timeout_s
    if not engine.ready:
        return error(
            503, engine.failure or "model is still loading; retry when GET /ping answers 200", retry_after=1
        )
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    if not (media == JSON_TYPE or media in IMAGE_TYPES or media.startswith("image/")):
        return error(
            415,
            f"unsupported Content-Type {content_type or '(none)'!r}: use {', '.join(IMAGE_TYPES)} or "
            f"{JSON_TYPE}",
            close=True,
        )
    accept = request.headers.get("accept")
    check_accept(accept)
    try:
        body = await asyncio.wait_for(read_body(request, s.max_body_bytes), deadline - time.monotonic())
    except asyncio.TimeoutError:
        return error(408, f"request body not received within {s.timeout_s:g}s", close=True)
    runner, batcher = engine.runner, engine.batcher

    def decode_and_submit() -> tuple[Batch, list[Future]]:
        # Submitting from the decode thread hands the images straight to the inference thread,
        # without a round trip through the event loop.
        try:
            batch = decode_request(
                body, content_type, s.max_image_pixels, s.max_instances, runner.resize_size
            )
            return batch, batcher.submit(batch.images)
        finally:
            batcher.arrived()

    batcher.announce()
    try:
        job = engine.decode_pool.submit(decode_and_submit)
    except RuntimeError as e:  # the pool is shut down: the server is stopping
        batcher.arrived()
        raise StoppedError("server is shutting down") from e
    try:
        batch, futures = await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        if job.cancel():  # never started: it will not call arrived() itself
            batcher.arrived()
        raise
    request.state.images = len(batch.images)
    try:
        rows = await wait_results(futures, request, deadline - time.monotonic())
    except TimeoutError:
        return error(
            503, f"no answer within {s.timeout_s:g}s: the server is overloaded; retry later", retry_after=1
        )
    predictions = top_predictions(torch.stack(rows), runner.class_names, batch.top_k)
    return Response(output_fn(predictions, accept), media_type=JSON_TYPE)


def create_app(settings: Settings, on_failure: Callable[[str], None] | None = None) -> FastAPI:
    """The ASGI app; the model starts loading when the app starts (lifespan), /ping says when it is ready.

    ``app.state.engine`` holds the model, batcher and counters.
    """
    engine = Engine(settings, on_failure)
    page = resources.files("serve").joinpath("static/index.html").read_bytes()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="dogbreed", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        request.state.error = str(exc.detail)
        return error(exc.status_code, str(exc.detail))

    @app.get("/ping")
    async def ping() -> Response:
        if not engine.ready:
            return error(503, engine.failure or "model is still loading")
        body = {
            "status": "ready",
            "classes": len(engine.runner.class_names),
            "precision": engine.runner.describe(),
        }
        return Response(json.dumps(body), media_type=JSON_TYPE)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        try:
            response = await invoke(request, engine)
        except RequestError as e:
            response = error(e.status, e.error, close=e.status == 413)
        except (QueueFullError, StoppedError) as e:
            response = error(503, f"{e}; retry later", retry_after=1)
        except ClientDisconnect:
            request.state.error = "client disconnected"
            return Response(status_code=CLIENT_CLOSED)
        except Exception as e:  # noqa: BLE001 — the server answers 500 and keeps serving
            log.exception("POST /invocations failed")
            response = error(500, f"inference failed: {type(e).__name__}: {e}")
        if response.status_code >= 400:
            request.state.error = json.loads(response.body)["error"]
        return response

    @app.get("/stats")
    async def stats() -> Response:
        body = {"ready": engine.ready, "settings": asdict(settings)}
        if engine.batcher is not None:
            batcher = engine.batcher
            body.update(
                max_batch_size=batcher.max_batch_size, queued=batcher.queued, **batcher.stats.as_dict()
            )
        return Response(json.dumps(body), media_type=JSON_TYPE)

    @app.get("/")
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    app.add_middleware(AccessLog)
    return app
