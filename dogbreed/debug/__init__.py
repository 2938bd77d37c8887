"""The Debugger: SageMaker Debugger's rules as our own code, run live in a Lightning callback and offline.

``DebuggerCallback`` (enabled by ``conf/callbacks/default.yaml``) records losses and per-layer tensor
statistics, evaluates the rules in :mod:`dogbreed.debug.rules` and writes ``reports/debugger.{json,html}``;
``python -m dogbreed.debug analyze PATH`` runs the same rules over an smdebug trial.
"""

from dogbreed.debug.callback import DebuggerCallback
from dogbreed.debug.rules import RULES, Finding, Rule, build_rules, evaluate
from dogbreed.debug.stats import History, StepRecord

__all__ = ["RULES", "DebuggerCallback", "Finding", "History", "Rule", "StepRecord", "build_rules", "evaluate"]
