"""Recommendations in this project's own config keys (``data.num_workers``, ``trainer.precision``, …).

Each helper returns one concrete fix for the run it looks at, or None when the fix does not apply
(already set, not supported here), so a rule never recommends what the user already did.
"""

from __future__ import annotations

import math

from dogbreed.profiler.timeline import RunContext


def target_workers(ctx: RunContext, min_threshold: float = 70) -> int:
    """Data-loader workers SageMaker's Dataloader rule asks for: at least ``min_threshold`` % of the cores."""
    return max(1, math.floor(ctx.cores * min_threshold / 100))


def more_workers(ctx: RunContext, min_threshold: float = 70, io_bound: bool = False) -> str | None:
    """Raise ``data.num_workers`` towards the cores;
    past them only when the loader waits rather than computes."""
    if ctx.num_workers is None or ctx.feature_cache:  # cached features are in memory: no workers
        return None
    want = target_workers(ctx, min_threshold)
    if ctx.num_workers < want:
        return f"raise data.num_workers from {ctx.num_workers} to {want} (this machine has {ctx.cores} cores)"
    if io_bound:
        return (
            f"raise data.num_workers from {ctx.num_workers} to {2 * max(1, ctx.num_workers)}: the loader "
            "waits on I/O rather than computing, so more workers than cores still overlap the waits"
        )
    return None


def feature_cache(ctx: RunContext) -> str | None:
    if ctx.frozen and ctx.feature_cache is False:
        return (
            "enable the feature cache (data.cache.enabled=true): with a frozen backbone its features are "
            "computed once, not every epoch"
        )
    return None


def bf16(ctx: RunContext) -> str | None:
    if ctx.bf16_capable and not str(ctx.precision).startswith("bf16"):
        where = "this GPU" if ctx.device == "cuda" else "this CPU (AVX-512 BF16/AMX)"
        return f"use trainer.precision=bf16-mixed ({where} supports bf16; the run used {ctx.precision})"
    return None


def pin_memory(ctx: RunContext) -> str | None:
    if ctx.device == "cuda" and ctx.pin_memory is False:
        return "set data.pin_memory=true so host-to-GPU copies overlap compute"
    return None


def bigger_batch(ctx: RunContext, why: str = "") -> str | None:
    if not ctx.batch_size:
        return None
    suffix = f" ({why})" if why else ""
    return (
        f"raise data.batch_size from {ctx.batch_size} to {2 * ctx.batch_size} and scale "
        f"model.lr with it{suffix}"
    )


def local_data() -> str:
    return "keep data.root on a local disk (on SageMaker: File mode or a local copy, not a network mount)"


def lighter_preprocessing() -> str:
    return "make per-image work cheaper: smaller source JPEGs, or lighter data.augment settings"


def join(*fixes: str | None) -> str:
    """``"a; b; or c"``: the applicable fixes in order of expected payoff."""
    items = [f for f in fixes if f]
    if not items:
        return ""
    if len(items) == 1:
        return items[0][0].upper() + items[0][1:] + "."
    text = "; ".join(items[:-1]) + "; or " + items[-1]
    return text[0].upper() + text[1:] + "."
