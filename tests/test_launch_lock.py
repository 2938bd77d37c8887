"""launch/job-requirements.txt is what this environment (CI's .venv, the full install) tested."""

from __future__ import annotations

from launch.source import LOCK, lock_lines


def test_the_lock_is_what_this_environment_tested() -> None:
    """Fails when a dependency or a pinned version changed without `make job-requirements`."""
    written = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert written == lock_lines(), "launch/job-requirements.txt is stale: run `make job-requirements`"
