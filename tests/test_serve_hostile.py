"""A hostile client against a real ``python -m serve`` process at the default limits, its address space capped
(RLIMIT_AS): every costly or malformed request gets a clean 4xx/503, a good request still succeeds after each,
resident memory stays bounded per request, and thousands of idle or trickling connections cannot lock
``/ping`` out or take the queue for ever."""

from __future__ import annotations

import http.client
import json
import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from image_bytes import b64_batch, malformed_requests, worst_cases

from serve.process import LocalServer

MEMORY_CAP = 2 * 2**30  # address space the server may add to its idle size: far below the old 5+ GB blow-ups
PEAK_BOUND_MIB = 1024  # resident memory above idle over the whole battery (worst request alone: 765 MiB)
HEADER_TIMEOUT = 2.0
TIMEOUT = 8.0


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    model = Path(trained_run["output_dir"]) / "model" / "model.pt"
    args = [
        "--no-warmup",
        "--threads",
        "1",
        "--timeout",
        str(TIMEOUT),
        "--header-timeout",
        str(HEADER_TIMEOUT),
    ]
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with LocalServer(model, *args, log_path=log) as running:
        yield running
    assert "Traceback" not in running.log()


@pytest.fixture(scope="module")
def good(synthetic_root) -> bytes:
    return next((synthetic_root / "test").glob("*/*.jpg")).read_bytes()


def post(server, body: bytes, content_type: str = "image/jpeg", headers: dict | None = None, timeout=60):
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request(
            "POST", "/invocations", body=body, headers={"Content-Type": content_type, **(headers or {})}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def ping(server, timeout: float = 2.0) -> int:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    finally:
        conn.close()


def still_serving(server, good: bytes) -> None:
    assert server.alive() and ping(server) == 200
    status, _, answer = post(server, good)
    assert status == 200 and len(answer["predictions"]) == 1


def test_the_costliest_requests_are_bounded_under_a_memory_cap(server, good):
    still_serving(server, good)
    idle = server.memory()["VmRSS"]
    server.cap_memory(MEMORY_CAP)
    server.reset_peak()
    added = {}
    for name, (body, content_type, expected) in worst_cases().items():
        status, headers, answer = post(server, body, content_type)
        assert status == expected, (name, answer)
        if expected == 200:
            images = len(json.loads(body)["instances"]) if content_type == "application/json" else 1
            assert len(answer["predictions"]) == images, name
        else:
            assert answer["error"] and "Traceback" not in answer["error"], name
        if expected == 413:  # names the limit and how to raise it
            assert "--max-" in answer["error"] and "DOGBREED_MAX_" in answer["error"], answer
        added[name] = server.memory()["VmHWM"] - idle
        still_serving(server, good)
    assert max(added.values()) < PEAK_BOUND_MIB, added

    rgba, content_type, _ = worst_cases()["50 MP RGBA PNG"]
    with ThreadPoolExecutor(6) as pool:  # decoders busy on the worst image, good requests mixed in
        jobs = [pool.submit(post, server, rgba, content_type) for _ in range(4)]
        jobs += [pool.submit(post, server, good) for _ in range(4)]
        answers = [job.result() for job in jobs]
    for status, headers, answer in answers:
        assert status == 200 or (status == 503 and headers["retry-after"]), answer
    still_serving(server, good)


@pytest.mark.parametrize("name", list(malformed_requests()))
def test_malformed_bodies_are_4xx_never_500(server, good, name):
    body, content_type, expected = malformed_requests()[name]
    status, headers, answer = post(server, body, content_type)
    assert status == expected and set(answer) == {"error"}, answer
    assert headers["x-request-id"]
    still_serving(server, good)


def test_top_k_beyond_the_classes_is_clamped(server, good):
    status, _, answer = post(server, b64_batch(good, top_k=10**18), "application/json")
    assert status == 200 and len(answer["predictions"][0]["top_k"]) == 4  # a 4-class model


def test_bad_headers_are_4xx(server, good):
    assert post(server, good, headers={"Accept": "text/csv"})[0] == 406
    for length in ("abc", "-5", "9" * 30):
        answer = raw(
            server,
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode(),
        )
        assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer
    flood = b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * 100_000 + b"\r\n\r\n"
    assert raw(server, flood).startswith(b"HTTP/1.1 431")
    still_serving(server, good)


def test_request_ids_are_honoured_echoed_and_logged(server, good):
    status, headers, _ = post(server, good, headers={"X-Amzn-RequestId": "sm-7f3a"})
    assert status == 200 and headers["x-amzn-requestid"] == headers["x-request-id"] == "sm-7f3a"
    status, headers, _ = post(server, b"junk", headers={"X-Request-Id": "mine.42"})
    assert status == 400 and headers["x-request-id"] == "mine.42" and "x-amzn-requestid" not in headers
    _, headers, _ = post(server, good, headers={"X-Request-Id": "no spaces allowed"})
    generated = headers["x-request-id"]
    assert len(generated) == 32 and generated != "no spaces allowed"
    deadline = time.monotonic() + 10
    while not {"sm-7f3a", "mine.42", generated} <= {r.get("request_id") for r in server.access_records()}:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.1)


def raw(server, data: bytes, wait: float = 15.0) -> bytes:
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def open_sockets(server, n: int) -> list[socket.socket]:
    url = urlsplit(server.url)
    return [socket.create_connection((url.hostname, url.port), timeout=10) for _ in range(n)]


def test_thousands_of_idle_and_trickling_connections_cannot_lock_out_ping(server, good):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    idle_count = min(2500, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 400)
    idle = open_sockets(server, idle_count)  # more than --max-connections (1000): the oldest make room
    trickling = open_sockets(server, 50)
    try:
        for sock in trickling:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(3):  # /ping answers at once, every time, while they hang on
            assert ping(server) == 200
            for sock in trickling:
                sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.3)
        assert time.monotonic() - started < 3 * HEADER_TIMEOUT
        still_serving(server, good)
        time.sleep(HEADER_TIMEOUT + 1)
        for sock in trickling:  # the header deadline closed them with a 408
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
        for sock in idle[-20:]:  # and the idle ones: closed (evicted or timed out), nothing sent
            assert sock.recv(4096) == b""
    finally:
        for sock in idle + trickling:
            sock.close()
    still_serving(server, good)


def test_a_full_queue_answers_503_before_reading_the_body_and_drains(server, good):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    )
    holders = open_sockets(server, 64)  # --max-queue 64: each upload holds a slot while it trickles
    try:
        for sock in holders:
            sock.sendall(head + b"\xff\xd8")
        time.sleep(0.5)
        probe = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = raw(server, probe, wait=3)  # the body is never sent: only a 503 can come back
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower(), answer
        assert b"100 Continue" not in answer and b"64 images already admitted" in answer
        assert ping(server) == 200  # busy is not broken
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 10
    while post(server, good)[0] != 200:  # hung-up uploads give their slots back
        assert time.monotonic() < deadline
        time.sleep(0.2)
