"""The training job's code: a staged ``source_dir`` and the pinned ``requirements.txt`` it installs.

The job runs this project: the ``dogbreed``, ``launch`` and ``serve`` packages, the Hydra configs, a
``requirements.txt`` and ``sagemaker_entry.py`` → ``launch.shim``. The requirements pin exactly the versions
CI tested, so a job started months from now resolves what CI ran: ``launch/job-requirements.txt`` holds the
installed versions of everything the project's dependencies pull in (torch, torchvision and the
installer tooling excluded: the image ships them), written by ``python -m launch.source --write``
(``make job-requirements``) from the CI environment; a test fails when it no longer matches it.

    python -m launch.source              # print requirements.txt for the default launch.extras
    python -m launch.source --write      # regenerate launch/job-requirements.txt from this environment
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dogbreed.config import CONFIG_DIR, ConfigError, compose

ENTRY_POINT = "sagemaker_entry.py"
ENTRY_SOURCE = (
    '"""SageMaker runs this file; see launch/shim.py."""\n'
    "from launch.shim import main\n\nraise SystemExit(main())\n"
)
PROVIDED_BY_IMAGE = frozenset({"torch", "torchvision"})
# Installer tooling, left to the image as `pip freeze` leaves it out.
NOT_PINNED = frozenset({"pip", "setuptools", "wheel"})
# Extras that are tooling on the launching machine, never part of the job.
NOT_FOR_THE_JOB = frozenset({"dev", "sagemaker", "sagemaker-v3"})
LOCK = Path(__file__).with_name("job-requirements.txt")
LOCK_HEADER = (
    "# The job's requirements.txt is cut from this file: the versions CI tested (python -m launch.source\n"
    "# --write, i.e. `make job-requirements`, regenerates it; tests/test_launch_source.py checks it).\n"
)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def _pin(name: str, required_by: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"{name} (required by {required_by}) is not installed, so its tested version is unknown: "
            "install the project with the extras first (make .venv)"
        ) from None


def _closure(requirements: Iterable[Requirement], required_by: str) -> dict[str, str]:
    """{canonical name: ``name==installed version``} for ``requirements`` and everything they pull in,
    torch/torchvision and their dependencies left to the image."""
    pins: dict[str, str] = {}
    todo = [(req, required_by) for req in requirements]
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or name in PROVIDED_BY_IMAGE | NOT_PINNED or name == "dogbreed":
            continue
        pins[name] = _pin(name, parent)
        for text in importlib.metadata.requires(name) or []:
            child = Requirement(text)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in envs):
                todo.append((child, name))
    return pins


def lock_lines() -> list[str]:
    """The lock file's lines from this environment: core pins plain, extra-only pins with an extra marker."""
    try:
        declared = [Requirement(t) for t in importlib.metadata.requires("dogbreed") or []]
        extras = importlib.metadata.metadata("dogbreed").get_all("Provides-Extra") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("dogbreed is not installed: run `pip install -e .` (or `make .venv`)") from None
    core = _closure([r for r in declared if r.marker is None], "dogbreed")
    needed_by: dict[str, list[str]] = {}
    pins = dict(core)
    for extra in sorted(set(extras) - NOT_FOR_THE_JOB):
        reqs = [r for r in declared if r.marker is not None and r.marker.evaluate({"extra": extra})]
        for name, pin in _closure(reqs, f"dogbreed[{extra}]").items():
            if name not in core:
                pins[name] = pin
                needed_by.setdefault(name, []).append(extra)
    lines = []
    for name in sorted(pins):
        marker = " or ".join(f'extra == "{e}"' for e in needed_by.get(name, []))
        lines.append(f"{pins[name]} ; {marker}" if marker else pins[name])
    return lines


def write_lock() -> Path:
    from dogbreed.atomic import write_text

    return write_text(LOCK, LOCK_HEADER + "\n".join(lock_lines()) + "\n")


def requirements(extras: Sequence[str]) -> list[str]:
    """The job's requirements.txt lines: every tested pin of the core dependencies and of ``extras``."""
    pins = [Requirement(line) for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    known = {e for req in pins if req.marker for e in re.findall(r'extra == "([^"]+)"', str(req.marker))}
    unknown = sorted(set(extras) - known - NOT_FOR_THE_JOB)
    if unknown:
        raise ConfigError(
            f"launch.extras: {unknown} have no tested pins in launch/{LOCK.name} (extras with pins: "
            f"{sorted(known)}); install them and run `make job-requirements`"
        )
    chosen = []
    for req in pins:
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            req.marker = None
            chosen.append(str(req))
    return chosen


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {name!r} is not importable; it is part of the training job's code")
    return Path(next(iter(spec.submodule_search_locations)))


@contextmanager
def staged_source(extras: Sequence[str]) -> Iterator[Path]:
    """A temporary source_dir holding exactly what the job needs (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="dogbreed-source-") as tmp:
        root = Path(tmp)
        for package in ("dogbreed", "launch", "serve"):
            shutil.copytree(_package_dir(package), root / package, ignore=_IGNORE)
        if not (root / "dogbreed" / "conf" / "train.yaml").is_file():
            shutil.copytree(CONFIG_DIR, root / "conf", ignore=_IGNORE)
        (root / "requirements.txt").write_text("\n".join(requirements(extras)) + "\n")
        (root / ENTRY_POINT).write_text(ENTRY_SOURCE)
        yield root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.source", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"regenerate {LOCK} from this environment")
    parser.add_argument("--extras", nargs="*", help="extras to print pins for (default: launch.extras)")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write_lock()}")
    else:
        extras = args.extras if args.extras is not None else list(compose("launch_train", []).launch.extras)
        print("\n".join(requirements(extras)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
