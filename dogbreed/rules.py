"""The rule-result shape shared by the debugger and profiler reports (see DESIGN.md).

``{"rules": [{"name", "status", "step", "message", "recommendation"}], …}`` with SageMaker's rule names
and statuses, so a user reads our local reports and AWS's the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from dogbreed.atomic import write_json

Status = Literal["IssuesFound", "NoIssuesFound", "Error"]
STATUSES: tuple[str, ...] = ("IssuesFound", "NoIssuesFound", "Error")


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
