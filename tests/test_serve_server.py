"""``python -m serve`` as a real process on 127.0.0.1: the endpoint contract, every bad input, batching,
disconnects, timeouts, the access log — and the server is still alive at the end."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from image_bytes import encode, png_header_only
from PIL import Image

from serve.process import LocalServer

MAX_BODY = 256 * 1024
MAX_PIXELS = 1_000_000


def held_out(root: Path) -> list[tuple[Path, str]]:
    return [(img, cls.name) for cls in sorted((root / "test").iterdir()) for img in sorted(cls.iterdir())]


@pytest.fixture(scope="module")
def model_pt(trained_run) -> Path:
    return Path(trained_run["output_dir"]) / "model" / "model.pt"


@pytest.fixture(scope="module")
def correct_images(model_pt, synthetic_root) -> list[tuple[Path, str]]:
    """Held-out images the library itself classifies correctly: the server must agree."""
    from dogbreed.predict import load_model

    images = held_out(synthetic_root)
    labels = [p.label for p in load_model(model_pt).predict([p for p, _ in images])]
    right = [(path, truth) for (path, truth), label in zip(images, labels, strict=True) if label == truth]
    assert len(right) >= len(images) // 2
    return right


@pytest.fixture(scope="module")
def server(model_pt, tmp_path_factory):
    args = [
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-image-pixels",
        str(MAX_PIXELS),
        "--max-instances",
        "8",
        "--max-batch-size",
        "4",
        "--max-wait-ms",
        "20",
        "--timeout",
        "10",  # seconds: 48 concurrent requests take ~6 s on a slow 2-core CPU
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--no-warmup",
    ]  # keep batches of 4: the warm-up may find single images cheaper on this CPU
    with LocalServer(model_pt, *args, log_path=tmp_path_factory.mktemp("serve") / "server.log") as running:
        yield running


def request(
    server: LocalServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None, **kw
) -> tuple[int, dict, bytes]:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kw)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def invoke(server: LocalServer, body: bytes, content_type: str | None = "image/jpeg") -> tuple[int, dict]:
    status, _, data = request(
        server, "POST", "/invocations", body, {"Content-Type": content_type} if content_type else {}
    )
    return status, json.loads(data)


def raw_exchange(server: LocalServer, head: bytes, then_close: bool, wait: float = 25.0) -> bytes:
    """Send bytes on a bare socket; either hang up at once or read whatever the server answers."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=wait) as sock:
        sock.sendall(head)
        if then_close:
            return b""
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def test_ping_and_the_page(server):
    status, _, body = request(server, "GET", "/ping")
    assert status == 200 and json.loads(body)["classes"] == 4
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'type="file"' in page


def test_a_held_out_image_comes_back_with_its_class(server, correct_images):
    path, truth = correct_images[0]
    status, answer = invoke(server, path.read_bytes())
    assert status == 200
    (pred,) = answer["predictions"]
    assert pred["label"] == truth == pred["top_k"][0]["label"]
    assert len(pred["top_k"]) == 4 and abs(sum(t["probability"] for t in pred["top_k"]) - 1.0) < 1e-3


def test_json_batch_answers_every_instance_in_order(server, correct_images):
    chosen = correct_images[:3]
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p, _ in chosen], "top_k": 2}
    )
    status, answer = invoke(server, body.encode(), "application/json")
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == [truth for _, truth in chosen]
    assert all(len(p["top_k"]) == 2 for p in answer["predictions"])


@pytest.mark.parametrize(
    ("make", "content_type"),
    [
        (lambda: encode(Image.new("I;16", (64, 48), 40000), "PNG"), "image/png"),
        (lambda: encode(Image.new("CMYK", (64, 48), (10, 80, 200, 0)), "JPEG"), "image/jpeg"),
        (lambda: encode(Image.new("RGBA", (64, 48), (200, 30, 30, 90)), "PNG"), "image/png"),
        (lambda: encode(Image.new("L", (64, 48), 128), "JPEG"), "application/x-image"),
        (lambda: encode(Image.new("RGB", (64, 48), (0, 90, 200)).convert("P"), "PNG"), "image/png"),
    ],
    ids=["16-bit", "cmyk", "rgba", "grayscale", "palette"],
)
def test_unusual_image_kinds_succeed(server, make, content_type):
    status, answer = invoke(server, make(), content_type)
    assert status == 200 and len(answer["predictions"]) == 1


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG", quality=95)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("make", "content_type", "status", "words"),
    [
        (lambda: b"GIF? no: just some text", "image/jpeg", 400, "is not a JPEG"),
        (truncated_jpeg, "image/jpeg", 400, "truncated"),
        (lambda: b"", "image/jpeg", 400, "empty"),
        (lambda: encode(Image.new("L", (2000, 1000)), "PNG"), "image/png", 413, "pixels"),
        (lambda: png_header_only(100_000, 100_000), "image/png", 413, "--max-image-pixels"),
        (lambda: b"hello", "text/plain", 415, "unsupported Content-Type"),
        (lambda: b"hello", None, 415, "unsupported Content-Type"),
        (lambda: b'{"instances": [', "application/json", 400, "not valid JSON"),
        (lambda: b'{"instances": [{"b64": "%%%"}]}', "application/json", 400, "not valid base64"),
        (
            lambda: json.dumps({"instances": [{"b64": "eA=="}] * 9}).encode(),
            "application/json",
            413,
            "over the limit of 8",
        ),
        (lambda: os.urandom(MAX_BODY + 50_000), "image/jpeg", 413, "over the limit"),
    ],
    ids=[
        "non-image",
        "truncated-jpeg",
        "empty-body",
        "huge-dimensions",
        "decompression-bomb",
        "wrong-content-type",
        "no-content-type",
        "bad-json",
        "bad-base64",
        "too-many-instances",
        "oversize-body",
    ],
)
def test_bad_input_gets_the_right_status_and_a_json_error(server, make, content_type, status, words):
    got, answer = invoke(server, make(), content_type)
    assert got == status and words in answer["error"]
    assert request(server, "GET", "/ping")[0] == 200


def test_oversize_chunked_upload_is_refused(server):
    chunks = iter([os.urandom(16 * 1024)] * 20)  # 320 KiB, no Content-Length
    status, _, body = request(
        server,
        "POST",
        "/invocations",
        chunks,
        {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 413 and "limit" in json.loads(body)["error"]


def test_wrong_method_and_unknown_path_are_json_errors(server):
    for method, path, status in (("GET", "/invocations", 405), ("GET", "/nowhere", 404)):
        got, _, body = request(server, method, path)
        assert got == status and "error" in json.loads(body)


def wait_for_record(server: LocalServer, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in server.access_records():
            if predicate(record):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no such access-log record in:\n{server.log()[-2000:]}")


def test_client_disconnecting_mid_upload_is_logged_and_harmless(server, correct_images):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    )
    raw_exchange(server, head + b"\xff\xd8" + b"\0" * 5000, then_close=True)
    record = wait_for_record(server, lambda r: r["status"] == 499)
    assert record["error"] == "client disconnected" and record["bytes_in"] < 100000
    path, truth = correct_images[0]
    assert invoke(server, path.read_bytes())[1]["predictions"][0]["label"] == truth


def test_a_stalled_upload_times_out_with_408(server):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_exchange(server, head + b"\xff\xd8", then_close=False)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 10s" in answer
    assert 9.5 < time.monotonic() - started < 20


def test_concurrent_requests_share_forward_passes(server, correct_images):
    before = json.loads(request(server, "GET", "/stats")[2])
    bodies = [p.read_bytes() for p, _ in correct_images] * 3
    barrier = threading.Barrier(len(bodies))

    def one(body: bytes) -> int:
        barrier.wait(10)
        return invoke(server, body)[0]

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert set(pool.map(one, bodies)) == {200}
    after = json.loads(request(server, "GET", "/stats")[2])
    images, passes = after["items"] - before["items"], after["batches"] - before["batches"]
    assert images == len(bodies) and passes < images  # some forward passes carried several requests
    assert after["largest_batch"] <= 4


def test_access_log_has_one_json_line_per_request_with_latency(server):
    invoke(server, b"hello", "text/plain")
    record = wait_for_record(server, lambda r: r["status"] == 415)
    assert (
        record["method"] == "POST" and record["path"] == "/invocations" and "Content-Type" in record["error"]
    )
    ok = wait_for_record(server, lambda r: r["status"] == 200 and r["path"] == "/invocations")
    assert ok["latency_ms"] > 0 and ok["images"] == 1 and ok["bytes_in"] > 0 and ok["bytes_out"] > 0


def test_predict_client_against_the_server(server, correct_images, tmp_path):
    (path, truth), bad = correct_images[0], tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    ok = subprocess.run(
        [sys.executable, "-m", "serve.predict", str(path), "--endpoint", server.url, "--top-k", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith(f"{path}: {truth} ") and len(lines) == 3 and lines[1].strip().endswith(truth)
    mixed = subprocess.run(
        [sys.executable, "-m", "serve.predict", str(bad), str(path), "--endpoint", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert mixed.returncode == 1 and f"{bad}: HTTP 400" in mixed.stderr and truth in mixed.stdout


def test_server_survived_everything(server):
    assert server.alive()
    assert request(server, "GET", "/ping")[0] == 200
    assert "Traceback" not in server.log()
