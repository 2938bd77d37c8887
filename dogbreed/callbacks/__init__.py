"""Lightning callbacks that dogbreed adds to a run."""

from dogbreed.callbacks.metric_lines import MetricLines

__all__ = ["MetricLines"]
