"""`python -m dogbreed.data download` against a local HTTP server: resume, checksums, zip-slip,
atomic no-op reruns."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dogbreed.data.__main__ import main
from dogbreed.data.download import CHUNK, DownloadError, UnsafeArchiveError, download
from dogbreed.data.layout import find_splits


def make_zip(root: Path, top: str = "dogImages", extra: dict[str, bytes] | None = None) -> bytes:
    """The dataset at ``root`` zipped under ``top/`` like dogImages.zip,
    plus macOS junk and ``extra`` entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix == ".jpg":
                zf.write(path, f"{top}/{path.relative_to(root).as_posix()}")
        zf.writestr(f"__MACOSX/{top}/._train", b"resource fork")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class ZipServer(ThreadingHTTPServer):
    """Serves ``payload`` at any path, with ETag (its MD5, as S3 does) and Range;
    can drop a transfer midway."""

    daemon_threads = True

    def __init__(self, payload: bytes) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.payload = payload
        self.etag = f'"{hashlib.md5(payload).hexdigest()}"'
        self.ranges = True
        self.drop_after: int | None = None  # bytes of the body sent before the connection is cut
        self.drops = 0  # how many transfers to cut
        self.requests: list[dict[str, str]] = []
        self.fail_with: list[int] = []  # status codes to answer the next requests with, in order
        self.bytes_sent = 0
        self.content_range: str | None = None  # a wrong Content-Range to send with every 206
        self.redirect_to: str | None = None  # answer 302 to this Location instead of serving

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dog-project/dogImages.zip"


class Handler(BaseHTTPRequestHandler):
    server: ZipServer

    def do_GET(self) -> None:
        srv, body = self.server, self.server.payload
        srv.requests.append(dict(self.headers))
        if srv.fail_with:
            self.send_error(srv.fail_with.pop(0))
            return
        if srv.redirect_to and self.path != "/final.zip":
            self.send_response(302)
            self.send_header("Location", srv.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and srv.ranges and self.headers.get("If-Range", srv.etag) == srv.etag:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", srv.etag)
        if start:
            right = f"bytes {start}-{len(body) - 1}/{len(body)}"
            self.send_header("Content-Range", srv.content_range or right)
        self.end_headers()
        chunk = body[start:]
        if srv.drops and srv.drop_after is not None:
            srv.drops -= 1
            chunk = chunk[: srv.drop_after]
            self.close_connection = True
        self.wfile.write(chunk)
        srv.bytes_sent += len(chunk)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def payload(synthetic_root: Path) -> bytes:
    return make_zip(synthetic_root)


@pytest.fixture
def server(payload: bytes):
    srv = ZipServer(payload)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def get(url: str, dest: Path, **kw):
    kw.setdefault("retries", 0)
    return download(url, dest, progress=False, retry_wait=0, echo=lambda msg: None, **kw)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def source_tree(synthetic_root: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree(synthetic_root).items() if k.endswith(".jpg")}


def test_download_extracts_atomically_and_rerun_is_a_noop(server, tmp_path, synthetic_root):
    result = get(server.url, tmp_path / "data")
    target = tmp_path / "data" / "dogImages"
    assert result.path == target and not result.skipped
    assert tree(target) == source_tree(synthetic_root)  # junk (__MACOSX) skipped, nothing else added
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "dogImages"
    ]  # no archive, .part or temp folder
    assert "train 48, valid 16, test 16 images" in result.message
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not the temp folder's private 0700
    again = get(server.url, tmp_path / "data")
    assert again.skipped and "already there" in again.message
    assert len(server.requests) == 1  # the rerun did not touch the network


def test_interrupted_transfer_resumes_with_range(server, tmp_path, synthetic_root, payload):
    server.drop_after, server.drops = len(payload) // 3, 1
    messages: list[str] = []
    download(server.url, tmp_path, retries=2, retry_wait=0, progress=False, echo=messages.append)
    kept = len(payload) // 3 // CHUNK * CHUNK  # whole blocks received before the cut
    assert kept > 0 and any("resuming" in m for m in messages)
    assert len(server.requests) == 2
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == f"bytes={kept}-"
    assert server.requests[1]["If-Range"] == server.etag
    assert server.bytes_sent == len(payload) + len(payload) // 3 - kept  # only the unfinished block again
    assert tree(tmp_path / "dogImages") == source_tree(synthetic_root)


def test_cli_keeps_partial_file_and_next_run_resumes(server, tmp_path, payload, capsys):
    server.drop_after, server.drops = 2 * CHUNK, 1
    argv = ["download", "--url", server.url, "--dest", str(tmp_path), "--retries", "0", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"interrupted after {2 * CHUNK:,} bytes" in err and "run the same command again to resume" in err
    assert (tmp_path / "dogImages.zip.part").stat().st_size == 2 * CHUNK
    assert not (tmp_path / "dogImages").exists()
    assert main(argv) == 0
    assert "dogImages is ready" in capsys.readouterr().out
    assert server.requests[-1]["Range"] == f"bytes={2 * CHUNK}-" and server.bytes_sent == len(payload)


def test_server_without_range_support_restarts_cleanly(server, tmp_path, synthetic_root):
    server.ranges, server.drop_after, server.drops = False, CHUNK + 10, 1
    with pytest.raises(DownloadError):
        get(server.url, tmp_path)
    get(server.url, tmp_path)  # the 200 answer to the ranged request replaces the partial file
    assert tree(tmp_path / "dogImages") == source_tree(synthetic_root)


def test_checksum_mismatch_is_refused_and_the_file_removed(server, tmp_path, payload):
    with pytest.raises(DownloadError, match=r"checksum mismatch .* expected sha256 0{64} \(--checksum\)"):
        get(server.url, tmp_path, checksum="sha256:" + "0" * 64)
    assert list(tmp_path.iterdir()) == []
    good = hashlib.sha256(payload).hexdigest()
    assert get(server.url, tmp_path, checksum=f"sha256:{good}").path.is_dir()


def test_wrong_etag_md5_is_caught(server, tmp_path):
    server.etag = f'"{hashlib.md5(b"some other file").hexdigest()}"'
    with pytest.raises(DownloadError, match="the server's ETag"):
        get(server.url, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "entry",
    [
        "dogImages/train/001.Circles/../../../../evil.txt",
        "/tmp/evil.txt",
        "C:/evil.txt",
        "dogImages\\..\\..\\evil.txt",
        "symlink",
    ],
)
def test_zip_slip_archives_are_refused_before_anything_is_written(server, tmp_path, synthetic_root, entry):
    buf = io.BytesIO(make_zip(synthetic_root))
    with zipfile.ZipFile(buf, "a") as zf:
        if entry == "symlink":
            info = zipfile.ZipInfo("dogImages/train/001.Circles/evil.jpg")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(entry, b"pwned")
    server.payload = buf.getvalue()
    server.etag = f'"{hashlib.md5(server.payload).hexdigest()}"'
    dest = tmp_path / "deep" / "data"
    with pytest.raises(UnsafeArchiveError, match="refusing to extract.*archive is kept at .*--force"):
        get(server.url, dest)
    assert not list(tmp_path.rglob("evil*")) and not (dest / "dogImages").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["dogImages.zip"]  # kept for inspection, no temp folder
    with pytest.raises(
        UnsafeArchiveError
    ):  # a rerun reuses the complete archive instead of fetching it again
        get(server.url, dest)
    assert len(server.requests) == 1
    server.payload = make_zip(synthetic_root)
    server.etag = f'"{hashlib.md5(server.payload).hexdigest()}"'
    get(server.url, dest, force=True)  # --force fetches it again
    assert tree(dest / "dogImages") == source_tree(synthetic_root)


def test_local_archive_splits_at_top_level_and_force(tmp_path, synthetic_root):
    flat = tmp_path / "flat.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(synthetic_root.rglob("*.jpg")):
            zf.write(path, path.relative_to(synthetic_root).as_posix())
    flat.write_bytes(buf.getvalue())
    result = download(archive=flat, dest=tmp_path / "data", progress=False, echo=lambda m: None)
    assert result.path == tmp_path / "data" / "flat" and tree(result.path) == source_tree(synthetic_root)
    assert flat.exists()  # a user's archive is never removed
    (result.path / "marker").write_text("old")
    download(archive=flat, dest=tmp_path / "data", force=True, progress=False, echo=lambda m: None)
    assert not (result.path / "marker").exists()


def test_bad_archives_and_targets_say_what_to_do(tmp_path, synthetic_root):
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("photos/a.jpg", b"x")
    with pytest.raises(
        DownloadError, match=r"holds no train/, valid/ \(or val/\) and test/ folders \(top level: photos\)"
    ):
        download(archive=odd, dest=tmp_path / "data", progress=False, echo=lambda m: None)
    (tmp_path / "data" / "odd").mkdir(parents=True)
    with pytest.raises(DownloadError, match="exists but is not a complete dataset.*--force"):
        download(archive=odd, dest=tmp_path / "data", progress=False, echo=lambda m: None)
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(DownloadError, match="is not a zip archive"):
        download(archive=tmp_path / "notzip.zip", dest=tmp_path / "d2", progress=False, echo=lambda m: None)
    assert main(["download", "--url", "http://127.0.0.1:9/data.tar", "--dest", str(tmp_path)]) == 2


def test_server_errors_are_retried_and_client_errors_are_not(server, tmp_path, synthetic_root):
    server.fail_with = [503, 502]
    get(server.url, tmp_path, retries=2)
    assert len(server.requests) == 3 and tree(tmp_path / "dogImages") == source_tree(synthetic_root)
    server.fail_with = [404]
    with pytest.raises(
        DownloadError,
        match=r"GET http://127\.0\.0\.1:\d+/dog-project/dogImages\.zip answered HTTP 404.*--url",
    ):
        get(server.url, tmp_path / "other", retries=3)
    assert len(server.requests) == 4


def test_complete_partial_file_is_not_fetched_again(server, tmp_path, synthetic_root, payload):
    (tmp_path / "dogImages.zip.part").write_bytes(
        payload
    )  # e.g. killed after the last byte, before the rename
    get(server.url, tmp_path)
    assert server.requests[0]["Range"] == f"bytes={len(payload)}-" and server.bytes_sent == 0
    assert tree(tmp_path / "dogImages") == source_tree(synthetic_root)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    status = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


@pytest.mark.parametrize("marker", ["", "{broken", "[1, 2]", '{"validator": 5}'])
def test_unreadable_resume_marker_is_one_line_not_a_traceback(server, tmp_path, payload, capsys, marker):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "dogImages.zip.part").write_bytes(payload[:1000])
    (dest / "dogImages.zip.part.json").write_text(marker)
    status, err = run_cli(["download", "--url", server.url, "--dest", str(dest), "--quiet"], capsys)
    assert status == 0, err
    assert "the resume marker dogImages.zip.part.json is unreadable" in err
    assert server.requests[0]["Range"] == "bytes=1000-" and "If-Range" not in server.requests[0]
    assert find_splits(dest / "dogImages")  # the ETag (an MD5) proved the joined file whole


@pytest.mark.parametrize("content_range", ["bytes 0-99/5000", "bytes 7-3/5000", "nonsense"])
def test_wrong_content_range_is_not_appended(server, tmp_path, synthetic_root, payload, content_range):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "dogImages.zip.part").write_bytes(payload[:1000])
    (dest / "dogImages.zip.part.json").write_text(json.dumps({"url": server.url, "validator": server.etag}))
    server.content_range = content_range
    result = get(server.url, dest, retries=1)
    assert not result.skipped and tree(dest / "dogImages") == source_tree(synthetic_root)
    assert server.requests[0]["Range"] == "bytes=1000-" and "Range" not in server.requests[1]


def test_redirect_to_another_scheme_is_refused_in_one_line(server, tmp_path, capsys):
    for target in ("ftp://127.0.0.1/dogImages.zip", "file:///etc/passwd"):
        server.redirect_to = target
        status, err = run_cli(["download", "--url", server.url, "--dest", str(tmp_path)], capsys)
        assert status != 0
        assert f"redirected to {target}" in err and "refusing to follow" in err
        assert not list(tmp_path.iterdir())
    server.redirect_to = server.url.rsplit("/", 2)[0] + "/final.zip"  # same scheme: followed
    assert get(server.url, tmp_path / "ok").path.is_dir()


def _damaged(payload: bytes, how: str) -> bytes:
    """``payload`` with its first image entry's bytes flipped (crc) or its declared size changed."""
    data = bytearray(payload)
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".jpg"))
    local = info.header_offset
    if how == "crc":
        name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
        data[local + 30 + name_len + extra_len + 10] ^= 0xFF
        return bytes(data)
    delta = 500 if how == "size_larger" else -500
    for offset in (local + 22, _central_header(data, info.filename) + 24):  # uncompressed size fields
        (size,) = struct.unpack_from("<I", data, offset)
        struct.pack_into("<I", data, offset, size + delta)
    return bytes(data)


def _central_header(data: bytearray, name: str) -> int:
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_len].decode() == name:
            return at
        at += 4
    raise AssertionError(name)


@pytest.mark.parametrize("how", ["crc", "size_larger", "size_smaller"])
def test_damaged_zip_entry_is_one_line_and_nothing_is_extracted(tmp_path, payload, capsys, how):
    archive = tmp_path / "dogImages.zip"
    archive.write_bytes(_damaged(payload, how))
    dest = tmp_path / "data"
    status, err = run_cli(["download", "--archive", str(archive), "--dest", str(dest)], capsys)
    assert status != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "is damaged: entry 'dogImages/" in errors[0] and "does not unpack" in errors[0]
    )
    assert not (dest / "dogImages").exists() and not [p for p in dest.glob(".*")]
