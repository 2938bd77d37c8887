"""`python -m dogbreed.data download` against a local HTTP server: resume, checksums, zip-slip,
atomic no-op reruns."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dogbreed.data.__main__ import main
from dogbreed.data.download import CHUNK, DownloadError, UnsafeArchiveError, download


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
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
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
