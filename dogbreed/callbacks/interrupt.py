"""Interrupted runs: SIGTERM (spot reclaim, ``kill``, schedulers) or SIGINT (Ctrl-C) during ``fit``.

Lightning alone turns SIGTERM into a ``SystemExit`` with status 0 and no checkpoint of the interrupted
step. Here the current batch finishes, :class:`InterruptCheckpoint` saves ``checkpoints/last.ckpt`` with
the loop state (Lightning's own checkpoint, so ``ckpt_path=`` resumes mid-epoch: see
``dogbreed.data.resumable``), prints one line with the epoch, the step and the exact command that resumes
the run, and the process exits 128 + the signal number (143 for SIGTERM, 130 for SIGINT), as a shell does.
A second Ctrl-C stops at once. :class:`IntervalCheckpoint` adds a ``last.ckpt`` every N steps or minutes
for what no signal announces (SIGKILL, a lost machine); inside a SageMaker job it is on by default.
"""

from __future__ import annotations

import logging
import re
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("dogbreed.train")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)\s*$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


class Interrupted(SystemExit):
    """The run stopped on a signal; ``code`` is 128 + the signal number, ``message`` says how to resume."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.message = message


def parse_every(every: Any, key: str = "callbacks.interval_checkpoint.every") -> int | timedelta | None:
    """``null`` → off, ``500`` → every 500 optimizer steps, ``"30s"``/``"10min"``/``"1h"`` → by time."""
    if every is None or every is False or every == "null":
        return None
    if isinstance(every, int) or (isinstance(every, str) and every.strip().isdigit()):
        steps = int(every)
        if steps < 1:
            raise ValueError(f"{key}={every!r} must be >= 1 steps (or null for off)")
        return steps
    match = _DURATION.match(str(every))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"{key}={every!r} must be a number of optimizer steps (500) or a duration (30s, 10min, 1h); "
            "null switches it off"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


class IntervalCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` writing only ``last.ckpt``, every ``every`` steps or minutes.

    It shares ``last.ckpt`` with the end-of-epoch checkpoint (the newest state wins), so a resume command
    and the SageMaker shim only ever look for one file.
    """

    def __init__(self, dirpath: str | Path, every: int | str | None = None) -> None:
        interval = parse_every(every)
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=interval is not None,
            every_n_train_steps=interval if isinstance(interval, int) else None,
            train_time_interval=interval if isinstance(interval, timedelta) else None,
            every_n_epochs=0,  # the end-of-epoch last.ckpt is the main ModelCheckpoint's
            enable_version_counter=False,
        )
        self.every = every


def resume_command(ckpt: Path) -> str:
    """The command line that resumes this run: its own overrides, its output folder, ``ckpt_path``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return f"train(cfg) with ckpt_path={ckpt}"
    hydra_cfg = HydraConfig.get()
    kept = [
        o
        for o in hydra_cfg.overrides.task
        if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "paths.output_dir")
    ]
    args = [*kept, f"paths.output_dir={hydra_cfg.runtime.output_dir}", f"ckpt_path={ckpt}"]
    return "python -m dogbreed.train " + " ".join(shlex.quote(a) for a in args)


class InterruptCheckpoint(Checkpoint):
    """On SIGTERM/SIGINT during ``fit``: finish the batch, save ``dirpath/last.ckpt``, say how to resume.

    A ``Checkpoint`` subclass, so Lightning runs its hooks after the other callbacks': the debugger's and
    profiler's state for the interrupted step is in the checkpoint.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.signum: int | None = None
        self.message: str | None = None
        self._previous: dict[int, Any] = {}
        self._training = False

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    # -- signal handlers, for the duration of fit() ------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self.signum, self.message, self._training = None, None, False
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return
        self.signum = signum
        if not self._training:  # set-up, sanity check: nothing trained yet, nothing to save
            self._restore()
            self.message = f"Interrupted by {name} before training started; nothing to resume"
            raise Interrupted(signum, self.message)
        again = " (Ctrl-C again: stop without one)" if signum == signal.SIGINT else ""
        log.warning("Received %s: finishing this step, then saving a checkpoint%s", name, again)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    # -- stop at a batch boundary ------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same batch, or the next collective hangs
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.signum = self.signum or signal.SIGTERM  # another rank got it
            raise SIGTERMException  # Lightning's own way out of the loops; on_exception follows

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_signalled(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._training:
            self._stop_if_signalled(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if self.signum is None and isinstance(exception, SIGTERMException):
            self.signum = signal.SIGTERM  # Lightning's handler saw it first (it stops at the same points)
        if self.signum is None or isinstance(exception, KeyboardInterrupt):  # an error, or "stop now"
            return
        if not isinstance(exception, Interrupted):
            self._save(trainer)
        if trainer.is_global_zero:
            print(self.message, flush=True)

    def _save(self, trainer: pl.Trainer) -> None:
        name = signal.Signals(self.signum).name
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if trainer.global_step == 0:
            self.message = f"Interrupted by {name} at {where}: nothing trained yet, nothing to resume"
        else:
            # Atomic: Lightning writes a temp file and moves it into place.
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            self.message = f"Interrupted by {name} at {where}; resume with: {resume_command(self.ckpt_path)}"


@contextmanager
def exit_status_on_interrupt(trainer: pl.Trainer) -> Iterator[None]:
    """Turn Lightning's ``SIGTERMException`` (a ``SystemExit`` with status 0) into :class:`Interrupted`."""
    try:
        yield
    except SIGTERMException:
        found = [c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)]
        signum = (found[0].signum if found else None) or signal.SIGTERM
        message = found[0].message if found else None
        if message is None:  # callbacks.interrupt=null: Lightning stopped, nothing was saved
            message = (
                f"Interrupted by {signal.Signals(signum).name} (callbacks.interrupt is off: no checkpoint)"
            )
            print(message, flush=True)
        raise Interrupted(signum, message) from None
