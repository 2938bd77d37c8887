"""Profiler: why is my training slow? A Lightning callback with a system monitor, per-step data-wait vs
compute timing, optional torch.profiler, SageMaker's profiler rules as our own code, JSON + HTML report."""

from dogbreed.profiler.builtin_rules import (
    RULE_DEFAULTS,
    RULES,
    build_rules,
    resolve_params,
    run_profiler_rules,
)
from dogbreed.profiler.callback import ProfilerCallback
from dogbreed.profiler.sampler import SystemSampler
from dogbreed.profiler.timeline import ProfileData, RunContext

__all__ = [
    "RULES",
    "RULE_DEFAULTS",
    "ProfileData",
    "ProfilerCallback",
    "RunContext",
    "SystemSampler",
    "build_rules",
    "resolve_params",
    "run_profiler_rules",
]
