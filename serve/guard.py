"""uvicorn's HTTP protocol with connection guards, so idle or slow clients cannot hold the server.

- **Header deadline**: a connection must finish its request headers within ``header_timeout`` seconds of
  connecting or of its previous response, else it is closed (with a 408 when it had started a request).
  uvicorn has none: a client that connects and trickles one byte a minute would hold its socket forever.
- **Header size**: more than ``max_header_bytes`` before the headers are complete → 431, closed.
- **Idle connections make room**: at ``max_connections`` a new connection first closes the one that has
  waited longest for a request (idle keep-alive or trickling headers), as nginx reuses idle connections
  when it runs out; so thousands of idle sockets never lock ``/ping`` out. A connection with a request in
  progress is never closed here; when all of them are busy, uvicorn's ``limit_concurrency`` answers 503.

Bodies have the request's own deadline (``--timeout``, enforced by the app).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol


def _reply(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(header_timeout: float, max_header_bytes: int, max_connections: int) -> type:
    """A subclass of the protocol uvicorn would pick (httptools, else h11) with the guards above."""
    waiting: dict[GuardedProtocol, None] = {}  # connections awaiting request headers, oldest first

    class GuardedProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: object = None
        _header_bytes = 0
        _tail = b""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            while len(self.connections) > max_connections and waiting:
                oldest = next(iter(waiting))
                oldest._close(None)
            self._await_request()

        def data_received(self, data: bytes) -> None:
            if self in waiting:  # count up to the blank line that ends the headers (a body may follow)
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                size = self._header_bytes + (len(data) if end < 0 else max(0, end + 4 - len(self._tail)))
                if size > max_header_bytes:
                    message = f"request headers over {max_header_bytes:,} bytes"
                    self._close(_reply("431 Request Header Fields Too Large", message))
                    return
                self._header_bytes, self._tail = size, seen[-3:]
            super().data_received(data)
            if self in waiting and self.cycle is not self._armed_cycle:  # the headers are complete
                self._stop_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_request(self) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a pipelined request is running; its response re-arms this
            self._stop_waiting()
            self._armed_cycle, self._header_bytes, self._tail = self.cycle, 0, b""
            waiting[self] = None
            self._deadline = asyncio.get_running_loop().call_later(header_timeout, self._expire)

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            started = self._header_bytes > 0
            message = f"request headers not received within {header_timeout:g}s"
            self._close(_reply("408 Request Timeout", message) if started else None)

        def _close(self, answer: bytes | None) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                if answer:
                    self.transport.write(answer)
                self.transport.close()

    return GuardedProtocol
