"""The rule base: SageMaker-named parameters with their defaults and types, an action, and findings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dogbreed.debug.stats import History

ACTIONS = ("warn", "stop")


@dataclass(frozen=True)
class Finding:
    """The rule's condition held at ``step`` (its first finding is the step SageMaker would report)."""

    rule: str
    step: int
    message: str


class Rule:
    """A Debugger rule: ``defaults`` are SageMaker's parameters; ``action`` is warn (log) or stop
    (end fit)."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    recommendation: ClassVar[str]
    # Findings at a step depend only on that step's record: live, only new records need a look.
    per_record: ClassVar[bool] = False

    def __init__(self, action: str = "warn", **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"callbacks.debugger.rules.{self.name}: unknown parameter(s) {unknown}; "
                f"valid: action, {', '.join(self.defaults)}"
            )
        if action not in ACTIONS:
            raise ValueError(f"callbacks.debugger.rules.{self.name}.action={action!r}: use warn or stop")
        self.action = action
        self.params = {**self.defaults, **{k: self._checked(k, v) for k, v in params.items()}}

    def _checked(self, key: str, value: Any) -> Any:
        """``value`` with the type of SageMaker's default (ints are fine for floats)."""
        kind = type(self.defaults[key])
        if self.defaults[key] is None or (
            kind is float and isinstance(value, int) and not isinstance(value, bool)
        ):
            return float(value) if kind is float else value
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(
                f"callbacks.debugger.rules.{self.name}.{key}={value!r} must be {kind.__name__} (default "
                f"{self.defaults[key]!r})"
            )
        return value

    def __getattr__(self, key: str) -> Any:
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)

    def findings(self, history: History) -> list[Finding]:
        raise NotImplementedError

    def missing(self, history: History) -> str | None:
        """Why the rule could not look at anything yet (None when it had data)."""
        return None

    def _finding(self, step: int, message: str) -> Finding:
        return Finding(self.name, int(step), message)


def names_preview(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
