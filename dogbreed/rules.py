"""What every rule shares (Debugger and Profiler alike): typed parameters, building from config, running,
and one result shape.

A rule is a dataclass whose fields are SageMaker's parameters: the annotation is the type, the default is
SageMaker's default. Values from config (``callbacks.debugger.rules.<Rule>.<param>``,
``callbacks.profiler.rules.<Rule>.<param>``) are checked when the rule is built, so a typo or a wrong type
fails before training and the message names the key. Results have one shape in both reports::

    {"rules": [{"name", "status", "step", "message", "recommendation"}], …}

with SageMaker's rule names and statuses, so a user reads our local reports and AWS's the same way.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from dogbreed.atomic import write_json

Status = Literal["IssuesFound", "NoIssuesFound", "Error"]
STATUSES: tuple[str, ...] = ("IssuesFound", "NoIssuesFound", "Error")
# Field metadata for a setting that is not one of SageMaker's parameters (the Debugger's ``action``).
SETTING = {"parameter": False}


@dataclass
class RuleResult:
    name: str
    status: Status
    step: int | None = None
    message: str = ""
    recommendation: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"rule status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_rules_report(path: str | Path, rules: list[RuleResult], **extra: Any) -> Path:
    """``{"rules": [...], **extra}`` as JSON, atomically."""
    return write_json(path, {"rules": [r.to_dict() for r in rules], **extra})


R = TypeVar("R", bound="Rule")


class _Defaults:
    """``RuleClass.defaults``: ``{parameter: SageMaker's default}``, read from the dataclass fields."""

    def __get__(self, instance: Any, owner: type[Rule]) -> Any:
        if "__dataclass_fields__" not in owner.__dict__:  # read by @dataclass while it builds the class
            return self
        return {f.name: f.default for f in owner.parameter_fields()}


def _accepts(hint: Any, value: Any) -> bool:
    """``value`` fits the annotation ``hint`` (int, float, bool, str, or one of them ``| None``);
    an int is a fine float, a bool is no number."""
    union = get_origin(hint) in (Union, types.UnionType)
    kinds = tuple(k for k in (get_args(hint) if union else (hint,)) if k is not type(None))
    if value is None:
        return union and type(None) in get_args(hint)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) or (float in kinds and isinstance(value, int))


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        names = [k.__name__ for k in get_args(hint) if k is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in get_args(hint) else "")
    return hint.__name__


@dataclass
class Rule:
    """Base of every rule. Subclasses are dataclasses: fields = parameters (SageMaker's names, types and
    defaults); ``name`` = SageMaker's rule name; ``config_key`` = where the family's rules live in config."""

    name: ClassVar[str]
    config_key: ClassVar[str]
    recommendation: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = _Defaults()  # type: ignore[assignment]

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            if not _accepts(hint, value):
                raise ValueError(
                    f"{self.key(f.name)}={value!r} must be {_type_name(hint)} (default {f.default!r})"
                )

    @classmethod
    def parameter_fields(cls) -> list[Field]:
        return [f for f in fields(cls) if f.metadata.get("parameter", True)]

    @classmethod
    def key(cls, param: str | None = None) -> str:
        """The config key of this rule (or of one of its parameters), for error messages."""
        return f"{cls.config_key}.{cls.name}" + (f".{param}" if param else "")

    @classmethod
    def from_config(cls: type[R], values: Mapping[str, Any] | None = None) -> R:
        """The rule with ``values`` over SageMaker's defaults; unknown keys fail and list the known ones."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"{cls.key()}: unknown parameter {', '.join(map(repr, unknown))}; known: "
                f"{', '.join(known) or '(none)'}"
            )
        return cls(**values)

    @property
    def params(self) -> dict[str, Any]:
        """SageMaker's parameters with this rule's values."""
        return {f.name: getattr(self, f.name) for f in self.parameter_fields()}

    def outcome(
        self, found: bool, message: str, recommendation: str | None = None, step: int | None = None
    ) -> RuleResult:
        """IssuesFound with a recommendation (the class's when none is given), or NoIssuesFound."""
        if not found:
            return RuleResult(self.name, "NoIssuesFound", step, message, "")
        fix = self.recommendation if recommendation is None else recommendation
        return RuleResult(self.name, "IssuesFound", step, message, fix)


def build_rules(
    registry: Mapping[str, type[R]],
    config: Mapping[str, Mapping[str, Any] | None] | None,
    unlisted: Literal["off", "default"],
) -> list[R]:
    """Rules from ``{name: {param: value} | None}`` in ``registry`` order; null switches a rule off, None
    for the whole config means every rule with its defaults. A rule missing from ``config`` is ``unlisted``:
    off (the Debugger: the listed rules are the ones that run, like an estimator's ``rules=[…]``) or on with
    its defaults (the Profiler: ``config`` overrides the full set, like SageMaker's ProfilerReport)."""
    if config is None:
        return [cls() for cls in registry.values()]
    unknown = [name for name in config if name not in registry]
    if unknown:
        family = next(iter(registry.values())).config_key
        raise ValueError(f"{family}: unknown rule {unknown[0]!r}; known rules: {', '.join(registry)}")
    rules = []
    for name, cls in registry.items():
        if name in config:
            if config[name] is not None:
                rules.append(cls.from_config(config[name]))
        elif unlisted == "default":
            rules.append(cls())
    return rules


def run_rules(rules: Iterable[R], check: Callable[[R], RuleResult]) -> list[RuleResult]:
    """``check(rule)`` for each rule; one that raises reports status Error instead of hiding the others."""
    results = []
    for rule in rules:
        try:
            results.append(check(rule))
        except Exception as exc:  # a broken rule must not hide the others' results
            results.append(
                RuleResult(rule.name, "Error", None, f"{type(exc).__name__}: {exc}", rule.recommendation)
            )
    return results
