"""The Debugger: SageMaker Debugger's rules as our own code, run live in a Lightning callback and offline.

``DebuggerCallback`` (enabled by ``conf/callbacks/default.yaml``) records losses and per-layer tensor
statistics, runs the rules in :mod:`dogbreed.debug.builtin_rules` and writes ``reports/debugger.{json,html}``;
``python -m dogbreed.debug analyze PATH`` runs the same rules over an smdebug trial.
"""

from dogbreed.debug.builtin_rules import RULES, DebuggerRule, Finding, build_rules, run_debugger_rules
from dogbreed.debug.callback import DebuggerCallback
from dogbreed.debug.stats import History, StepRecord

__all__ = [
    "RULES",
    "DebuggerCallback",
    "DebuggerRule",
    "Finding",
    "History",
    "StepRecord",
    "build_rules",
    "run_debugger_rules",
]
