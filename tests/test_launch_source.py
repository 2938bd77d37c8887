"""The job's code: the staged source dir runs on its own, and its requirements.txt pins what CI tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dogbreed.config import ConfigError
from launch.source import ENTRY_POINT, requirements, staged_source


def test_requirements_pin_every_package_to_one_version() -> None:
    lines = requirements(["smdebug", "gpu"])
    reqs = [Requirement(line) for line in lines]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs), lines
    names = {r.name for r in reqs}
    assert {"lightning", "hydra-core", "torchmetrics", "smdebug", "pandas", "nvidia-ml-py"} <= names
    assert not names & {"torch", "torchvision", "sagemaker", "optuna", "dogbreed", "pip", "setuptools"}
    assert "smdebug" not in {r.name for r in map(Requirement, requirements([]))}  # extras only when asked
    with pytest.raises(ConfigError, match=r"launch.extras: \['nope'\] have no tested pins"):
        requirements(["nope"])


def test_staged_source_is_the_whole_job(tmp_path: Path) -> None:
    """The job's source_dir runs on its own: the packages, the configs, the entry point, the requirements."""
    with staged_source(["smdebug"]) as root:
        assert (root / "requirements.txt").read_text().splitlines() == requirements(["smdebug"])
        assert "from launch.shim import main" in (root / ENTRY_POINT).read_text()
        probe = ("import dogbreed, dogbreed.config, launch.shim; print(dogbreed.__file__); "
                 "print((dogbreed.config.CONFIG_DIR / 'train.yaml').is_file())")  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60
        )
        where, found = done.stdout.split()
        assert where.startswith(str(root)) and found == "True", done.stderr
