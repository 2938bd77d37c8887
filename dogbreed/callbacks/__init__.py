"""Lightning callbacks that dogbreed adds to a run (each has its file under conf/callbacks/)."""

from dogbreed.callbacks.interrupt import InterruptCheckpoint, IntervalCheckpoint
from dogbreed.callbacks.metric_lines import MetricLines
from dogbreed.callbacks.progress import TerminalProgressBar

__all__ = ["InterruptCheckpoint", "IntervalCheckpoint", "MetricLines", "TerminalProgressBar"]
