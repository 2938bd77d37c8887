"""A throwaway PostgreSQL server for tests: Debian's binaries, initdb into a temp folder, a free port,
password authentication (so tests can check that the password never leaks). ``make postgres`` installs it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER, PASSWORD = "dogbreed", "s3cret-Pa55word"


def bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server() -> Iterator[str]:
    """Start a server; yield its URL (``postgresql://dogbreed:PASSWORD@127.0.0.1:PORT/postgres``)."""
    binaries = bin_dir()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL is not installed (make postgres installs Debian's postgresql)")
    # initdb refuses to run as root: as root, run the server as Debian's postgres user, in a folder it owns.
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="dogbreed-pg-"))
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    (root / "pw").write_text(PASSWORD)
    if as_root:
        for path in (root, root / "pw"):
            shutil.chown(path, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={root}/pw",
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
