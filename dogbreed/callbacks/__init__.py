"""Lightning callbacks that dogbreed adds to a run."""

from dogbreed.callbacks.interrupt import InterruptCheckpoint, IntervalCheckpoint
from dogbreed.callbacks.metric_lines import MetricLines

__all__ = ["InterruptCheckpoint", "IntervalCheckpoint", "MetricLines"]
