"""The local endpoint: FastAPI on uvicorn, SageMaker's contract, micro-batched inference off the event loop.

``GET /ping`` (200 once the model is loaded and work is moving, else 503), ``POST /invocations`` (same
requests and answers as ``serve/inference.py`` on SageMaker), ``GET /`` (a page to try a photo),
``GET /stats`` (batching counters). Every error is JSON ``{"error": …}``; every request gets one JSON
access-log line with its latency and request id (``X-Amzn-RequestId``/``X-Request-Id``, echoed back).

Work is bounded before it is done: a request is admitted into the batcher's ``--max-queue`` image slots
before its body is read (503 with Retry-After when they are taken), its body is read within the deadline,
decoded within the per-request limits (:class:`serve.inference.Limits`), and answered within ``--timeout``.
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
from dataclasses import asdict
from importlib import resources

import torch
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from serve.access import CLIENT_CLOSED, AccessLog
from serve.batching import MicroBatcher, QueueFullError, StoppedError
from serve.inference import (
    IMAGE_TYPES,
    JSON_TYPE,
    Batch,
    RequestError,
    check_accept,
    decode_request,
    load_torchscript,
    out_of_memory,
    output_fn,
    top_predictions,
)
from serve.runner import Runner
from serve.settings import Settings

__all__ = ["Engine", "Settings", "create_app"]

log = logging.getLogger("serve")
DRAIN_BYTES = 16 * 2**20  # read (and drop) this much of an oversize body so the client gets its 413


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
            runner = Runner(
                load_torchscript(s.model, s.device), s.precision, s.calibration, s.int8_min_agreement
            )
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

    def problem(self) -> str | None:
        """Why the server cannot take work now (for ``/ping``), or None when it can.

        Work being decoded or queued that has gone ``--timeout`` seconds without a decode or a forward pass
        finishing means the inference thread (or every decoder) is stuck: no request can succeed, so
        SageMaker should replace the container. It clears by itself as soon as something finishes.
        """
        if self.batcher is None:
            return self.failure or "model is still loading"
        if not self.batcher.alive:
            return "the inference thread has stopped"
        stalled = self.batcher.stalled_for()
        if stalled > self.settings.timeout_s:
            return (
                f"nothing finished in {stalled:.0f}s with {self.batcher.queued} images queued: the inference "
                "thread looks stuck"
            )
        return None

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)


def check_declared_length(request: Request, limit: int) -> None:
    """400 for a malformed Content-Length; 413 (without reading) when it is far over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise RequestError(400, f"Content-Length {declared[:40]!r} is not a number of bytes")
        if int(declared) > limit + DRAIN_BYTES:
            raise RequestError(
                413,
                f"body is {int(declared):,} bytes, over the limit of {limit:,} (--max-body-bytes); "
                "send a smaller image",
            )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; over ``limit`` bytes → 413.

    Up to ``DRAIN_BYTES`` beyond the limit are read and dropped before answering (as nginx's lingering
    close does): closing a socket with unread data makes the kernel reset the connection, and the
    client would see "connection reset" instead of the 413.
    """
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + DRAIN_BYTES:
            break
    if size > limit:
        raise RequestError(
            413, f"body is over the limit of {limit:,} bytes (--max-body-bytes); send a smaller image"
        )
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


class Ticket:
    """The admission slots one request holds in the batcher: one before its body is read, one per image once
    its JSON is parsed; given back exactly once, by whichever side ends the request."""

    def __init__(self, batcher: MicroBatcher, deadline: float) -> None:
        self.batcher, self.deadline = batcher, deadline
        self.held, self.closed = 0, False
        self._lock = threading.Lock()
        self.grow(1)

    def grow(self, n: int) -> None:
        with self._lock:
            if self.closed:
                raise TimeoutError
            self.batcher.reserve(n)
            self.held += n

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.batcher.release(self.held)
            self.held = 0


async def invoke(request: Request, engine: Engine) -> Response:
    """POST /invocations: admit, read, decode (thread pool), batch-infer (worker thread), answer."""
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
    check_declared_length(request, s.max_body_bytes)
    runner, batcher = engine.runner, engine.batcher
    ticket = Ticket(batcher, deadline)  # QueueFullError → 503 before a byte of the body is read
    try:
        try:
            body = await asyncio.wait_for(read_body(request, s.max_body_bytes), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return error(408, f"request body not received within {s.timeout_s:g}s (--timeout)", close=True)
        batch, futures = await decode(request, engine, ticket, body, content_type)
        request.state.images = len(batch.images)
        rows = await wait_results(futures, request, deadline - time.monotonic())
    except TimeoutError:
        return error(
            503,
            f"no answer within {s.timeout_s:g}s (--timeout): the server is overloaded; retry later",
            retry_after=1,
        )
    finally:
        ticket.close()
    predictions = top_predictions(torch.stack(rows), runner.class_names, batch.top_k)
    return Response(output_fn(predictions, accept), media_type=JSON_TYPE)


async def decode(
    request: Request, engine: Engine, ticket: Ticket, body: bytes, content_type: str | None
) -> tuple[Batch, list[Future]]:
    """Decode in the pool and submit to the batcher; TimeoutError when the deadline passes first."""
    s, batcher = engine.settings, engine.batcher
    limits, min_side = s.limits(), engine.runner.resize_size

    def admit(n: int) -> None:
        if n > s.max_queue:
            raise RequestError(
                413,
                f"request has {n} images; the server admits at most {s.max_queue} at a time (--max-queue); "
                "split the batch",
            )
        if n > 1:
            ticket.grow(n - 1)

    def decode_and_submit() -> tuple[Batch, list[Future]]:
        # Submitting from the decode thread hands the images straight to the inference thread,
        # without a round trip through the event loop.
        try:
            if time.monotonic() > ticket.deadline:
                raise TimeoutError
            batch = decode_request(body, content_type, limits, min_side, admit)
            batcher.progressed()
            if time.monotonic() > ticket.deadline:
                raise TimeoutError
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
        return await asyncio.wait_for(
            asyncio.shield(asyncio.wrap_future(job)), ticket.deadline - time.monotonic()
        )
    except BaseException as e:  # timed out, or the request task was cancelled: drop the work
        if job.cancel():  # never started: it will not call arrived() itself
            batcher.arrived()
        else:  # running: whatever it submits is cancelled, so the model never computes it
            job.add_done_callback(_cancel_submitted)
        if isinstance(e, asyncio.TimeoutError):
            raise TimeoutError from None
        raise


def _cancel_submitted(job: Future) -> None:
    if not job.cancelled() and job.exception() is None:
        for future in job.result()[1]:
            future.cancel()


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
        problem = engine.problem()
        if problem:
            return error(503, problem)
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
        except Exception as e:  # noqa: BLE001 — the server answers 500/503 (no internals) and keeps serving
            rid = request.state.request_id
            log.exception("POST /invocations failed (request %s)", rid)
            if out_of_memory(e):
                response = error(503, "out of memory; retry later", retry_after=1)
            else:
                response = error(500, f"internal error; the server log has the details under request {rid}")
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
