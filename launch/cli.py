"""Plumbing shared by the launch commands: module docstring as ``--help``, flag aliases, user errors as one
line, atomic files."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dogbreed import atomic


def module_doc(name: str) -> str:
    """The docstring of module ``name``: the ``--help`` header of each launch command (one text, two uses)."""
    return (importlib.import_module(name).__doc__ or name).strip() + "\n"


OmegaConf.register_new_resolver("module_doc", module_doc, replace=True)


def rewrite_flags(argv: list[str], aliases: Mapping[str, tuple[str, bool]]) -> list[str]:
    """``--delete`` → ``deploy.delete=true``; ``--attach NAME`` → ``tune.attach=NAME``
    (Hydra takes overrides only).

    ``aliases`` maps a flag to (override key, takes_value).
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        flag, _, inline = argv[i].partition("=")
        if flag in aliases:
            key, takes_value = aliases[flag]
            if not takes_value:
                out.append(f"{key}=true")
            elif inline:
                out.append(f"{key}={inline}")
            elif i + 1 < len(argv):
                out.append(f"{key}={argv[i + 1]}")
                i += 1
            else:
                raise SystemExit(f"{flag} needs a value")
        else:
            out.append(argv[i])
        i += 1
    return out


@contextmanager
def user_errors() -> Iterator[None]:
    """What the user can fix or act on ends the command with one ``error: …`` line instead of a traceback:
    a config mistake (ConfigError: exit 2, as ``python -m dogbreed.train``), a wait that ran out of its
    ``launch.timeouts`` budget (exit 1)."""
    from dogbreed.config import ConfigError
    from launch.session import WaitTimeout

    try:
        yield
    except (ConfigError, WaitTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None


def run_main(main: Callable[[], Any], aliases: Mapping[str, tuple[str, bool]] | None = None) -> None:
    """Call a ``@hydra.main`` function with the flag aliases rewritten in ``sys.argv``."""
    sys.argv = [sys.argv[0], *rewrite_flags(sys.argv[1:], aliases or {})]
    main()


def task_overrides() -> list[str]:
    """The overrides given on the command line of the running ``@hydra.main`` app."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def write_json(path: Path, data: Any) -> Path:
    return atomic.write_json(path, data, sort_keys=True)
