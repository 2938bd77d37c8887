"""The toolkit lanes' Python environments: one torch venv, thin layers over it, throwaway job venvs.

A torch install is ~6 GB, so there is one (``.venv-torch``: torch + torchvision, nothing else) and every
other environment is a *layer*: a venv whose ``site-packages`` holds only its own packages plus a
``.pth`` that adds the parent's ``site-packages`` behind them (``site.addsitedir``, so the parent's own
layers follow). pip run in a layer sees the parent's packages as installed and installs anything new (or
a different version) into the layer, which shadows the parent. The Makefile builds the persistent
layers (``python tests/toolkit/envs.py layer PARENT CHILD``); the tests make a fresh job layer per run,
so what a job pip-installs from its ``requirements.txt`` never leaks into the next run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH = REPO / ".venv-torch"
TRAIN = REPO / ".venv-toolkit-train"  # torch + sagemaker-training + sagemaker-pytorch-training
SERVE = REPO / ".venv-toolkit-serve"  # torch + sagemaker-pytorch-inference + torchserve
V3 = REPO / ".venv-v3"  # the launcher under SDK v3 (`make .venv-v3`), no torch
STAMP = ".installed"  # written by the Makefile once a venv is complete


def site_packages(venv: Path) -> Path:
    """``venv``'s purelib folder (asked of its own interpreter, so any Python version works)."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def layer(parent: Path, child: Path, with_pip: bool = True) -> Path:
    """Create ``child``, a venv that sees ``parent``'s packages behind its own; returns its python."""
    base = subprocess.run(
        [str(parent / "bin" / "python"), "-c", "import sys; print(sys._base_executable)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [base, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(child)],
        check=True,
    )
    line = f"import site; site.addsitedir({str(site_packages(parent))!r})\n"
    (site_packages(child) / f"_layer_{parent.name.lstrip('.')}.pth").write_text(line)
    return child / "bin" / "python"


def require(venv: Path) -> Path:
    """``venv`` if ``make`` built it, else fail saying which target builds it."""
    if not (venv / STAMP).is_file():
        import pytest

        pytest.fail(
            f"{venv.name} is missing: run `make toolkit-envs` (it builds the toolkit lanes' environments)",
            pytrace=False,
        )
    return venv


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "layer":
        raise SystemExit("usage: python tests/toolkit/envs.py layer PARENT_VENV CHILD_VENV")
    layer(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
