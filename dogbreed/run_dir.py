"""Every run gets an output folder of its own, even two runs started in the same second.

A Hydra callback (``conf/hydra/default.yaml``), so it acts before Hydra writes ``.hydra/`` or the log
into the folder. The default name (``outputs/<date>_<time>``) is claimed with an exclusive ``mkdir``; when
another run already has it, this run takes ``<name>_1``, ``<name>_2``, … A folder given on the command
line (``paths.output_dir=…``) is used as given — resuming into it is normal — unless a live process is
writing there: then the run stops with a message instead of mixing two runs' files. The processes of one
distributed run share its folder: only rank 0 holds the lock (the other ranks are its own children or
torchrun siblings, started with ``RANK``/``LOCAL_RANK`` set).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

LOCK_FILE = ".dogbreed.lock"
_held: dict[str, int] = {}  # folder → open lock file (released when the process ends)


class OutputDirInUse(RuntimeError):
    """Another live process is writing into this run's output folder."""


def _given(config: DictConfig) -> bool:
    """The user named the folder (``paths.output_dir=`` or ``hydra.run.dir=`` on the command line)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
    return bool(keys & {"paths.output_dir", "hydra.run.dir"})


def claim_new(base: Path) -> Path:
    """``base``, or the first free ``base_N``, created by this process (``mkdir`` is atomic)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise OutputDirInUse(f"{base}: 10,000 runs already use this name; set paths.output_dir=…")


def lock(folder: str | Path) -> None:
    """Hold an exclusive lock on ``folder`` for the life of this process; fail if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _held:
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputDirInUse(
            f"{folder} is in use by a run that is still going (pid {owner}); give this run its own "
            "paths.output_dir=…"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[key] = fd


def _is_secondary_rank() -> bool:
    """This process is a non-zero rank of a distributed run (Lightning's launcher or torchrun)."""
    return any(int(os.environ.get(name) or 0) > 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class ClaimOutputDir(Callback):
    """Hydra ``on_run_start``: make ``paths.output_dir`` this run's own folder (see the module doc).

    ``lock: false`` lets several processes share a folder on purpose (``launch.tune`` workers on one study).
    """

    def __init__(self, lock: bool = True) -> None:
        self.lock = bool(lock)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "paths.output_dir") is None:
            return
        folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        if not _given(config):
            claimed = claim_new(folder)
            if claimed != folder:
                with read_write(config), open_dict(config):
                    config.paths.output_dir = str(claimed)
            folder = claimed
        if self.lock and not _is_secondary_rank():
            try:
                lock(folder)
            except OutputDirInUse as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
