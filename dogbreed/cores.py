"""How many CPU cores this process may use: the one count behind ``data.num_workers=null``, the data check's
worker pool and the profiler's advice, so they never disagree (e.g. under ``taskset`` or a container's
cpuset). Standard library only, so ``python -m dogbreed.data check`` does not pay for importing torch."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's CPU affinity mask where the OS has one (Linux), else all of them; >= 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
