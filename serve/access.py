"""Request ids and the JSON access log (ASGI middleware): one line per request on the ``serve.access`` log."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("serve.access")
CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never sent
REQUEST_ID_HEADERS = (b"x-amzn-requestid", b"x-request-id")  # SageMaker's first
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id(scope: Scope) -> tuple[str, bytes | None]:
    """The client's ``X-Amzn-RequestId`` (SageMaker's) or ``X-Request-Id`` and the header it came in, or a
    new id (None) when neither is present or usable (1–128 characters of ``A-Za-z0-9._:/+=@-``)."""
    given = dict((k, v) for k, v in scope["headers"] if k in REQUEST_ID_HEADERS)
    for name in REQUEST_ID_HEADERS:
        value = given.get(name, b"").decode("latin-1")
        if REQUEST_ID.fullmatch(value):
            return value, name
    return uuid.uuid4().hex, None


class AccessLog:
    """ASGI middleware: the request id (honoured or generated, echoed in ``X-Request-Id`` and in the header
    it came in) and one JSON line per request (status, latency, bytes, images, error, request_id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        rid, came_in = request_id(scope)
        state["request_id"] = rid
        echo = [(b"x-request-id", rid.encode())]
        if came_in is not None and came_in != b"x-request-id":
            echo.append((came_in, rid.encode()))
        info: dict = {"status": None, "bytes_in": 0, "bytes_out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            info["bytes_in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *echo]}
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
                "request_id": rid,
            }
            record.update({k: state[k] for k in ("images", "error") if k in state})
            access_log.info(json.dumps(record))
