"""Run ``python -m serve`` in a child process on a free port and wait until it is ready.

    with LocalServer("outputs/…/model/model.pt", "--max-batch-size", "8") as server:
        urllib.request.urlopen(server.url + "/ping")

Used by the tests and bench/serve.py; handy in notebooks. The child's stderr (JSON access log included)
goes to ``server.log_path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class LocalServer:
    """A ``python -m serve --port 0`` child process; ``url`` is set once ``GET /ping`` answers 200."""

    def __init__(
        self,
        model: str | os.PathLike,
        *args: str,
        log_path: str | os.PathLike | None = None,
        ready_timeout: float = 180.0,
        env: dict[str, str] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        self.command = [
            sys.executable,
            "-m",
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
        ]
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.env = {**os.environ, **(env or {})}
        self.root = Path(root) if root else Path(__file__).resolve().parent.parent  # whose serve/ runs
        self.process: subprocess.Popen | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else -1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory(self) -> dict[str, float]:
        """The child's VmSize (address space), VmRSS (resident) and VmHWM (peak resident) in MiB (Linux)."""
        out = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmSize", "VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024
        return out

    def reset_peak(self) -> None:
        """Start VmHWM over from the current resident size (Linux ``clear_refs``)."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def cap_memory(self, extra_bytes: int) -> int:
        """Limit the child's address space (RLIMIT_AS) to its current size plus ``extra_bytes``: an
        allocation beyond fails inside it (MemoryError) instead of growing. Returns the cap in bytes."""
        import resource

        cap = int(self.memory()["VmSize"] * 2**20) + extra_bytes
        resource.prlimit(self.pid, resource.RLIMIT_AS, (cap, cap))
        return cap

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_records(self) -> list[dict]:
        """The JSON access-log lines written so far."""
        records = []
        for line in self.log().splitlines():
            if line.startswith("{") and '"path"' in line:
                records.append(json.loads(line))
        return records

    def start(self) -> LocalServer:
        env = {
            **self.env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(self.root), self.env.get("PYTHONPATH")])),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"server exited with {self.process.returncode} before it was ready:\n{self.log()[-3000:]}"
                )
            if not self.url:
                self.url = next(
                    (json.loads(line)["url"] for line in self.log().splitlines() if '"listening"' in line), ""
                )
            if self.url and self._ping() == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready within {self.ready_timeout:g}s:\n{self.log()[-3000:]}")

    def _ping(self) -> int:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it lingers; returns the exit code."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
