"""Passwords in URLs (``postgresql://user:PASSWORD@host/db``) never reach a saved config or a log line.

Hydra saves the composed config and the command-line overrides into ``<output dir>/.hydra/`` before the
app runs, and prints the overrides when the app fails; :class:`RedactSavedConfig` (registered in
``conf/hydra/default.yaml``) replaces every URL password in those with ``***``. The app itself keeps the
real value. Better still, keep the secret off the command line:
``tune.storage='${oc.env:DOGBREED_TUNE_STORAGE}'`` is saved as written, unresolved.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dogbreed.atomic import write_text

# scheme://user:password@host — the password is anything up to the last "@" before the host part.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)(?P<password>[^\s'\"]+)@")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@…`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", str(text))


class RedactSavedConfig(Callback):
    """Hydra ``on_job_start``: mask URL passwords in the ``.hydra/*.yaml`` files Hydra just wrote;
    ``on_job_end``: in the overrides Hydra prints when the job fails (``Error executing job with …``)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if job_return is not None and job_return.overrides:
            job_return.overrides = [redact(o) for o in job_return.overrides]

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        output_dir = config.hydra.runtime.output_dir
        subdir = config.hydra.output_subdir
        if not output_dir or subdir is None:
            return
        for path in sorted(Path(output_dir, subdir).glob("*.yaml")):
            text = path.read_text()
            masked = redact(text)
            if masked != text:
                write_text(path, masked)
