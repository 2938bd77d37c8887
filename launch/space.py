"""One search space for both tuners: each parameter becomes an Optuna suggestion or a SageMaker range.

A parameter names the Hydra key it sets (``key: model.lr``); that key is the Optuna parameter name and
the SageMaker hyperparameter name, and a chosen value becomes the override ``model.lr=<value>``.
Spaces live in ``conf/tune/*.yaml`` under ``tune.space`` (entries are instantiated with ``_target_``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
from hydra.errors import InstantiationException

from dogbreed.config import ConfigError
from launch.overrides import hydra_value


@dataclass(frozen=True)
class Continuous:
    """A float in [low, high]; ``log`` samples log-uniformly (SageMaker: Logarithmic scaling)."""

    key: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(
                f"tune.space {self.key}: need 0 < low < high for log scale, low < high otherwise "
                f"(got low={self.low}, high={self.high}, log={self.log})"
            )

    def suggest(self, trial) -> float:
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def sagemaker(self):
        from sagemaker.tuner import ContinuousParameter

        return ContinuousParameter(self.low, self.high, scaling_type="Logarithmic" if self.log else "Linear")


@dataclass(frozen=True)
class Integer:
    """An integer in [low, high] (inclusive)."""

    key: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ConfigError(f"tune.space {self.key}: low={self.low} must be <= high={self.high}")

    def suggest(self, trial) -> int:
        return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)

    def sagemaker(self):
        from sagemaker.tuner import IntegerParameter

        return IntegerParameter(self.low, self.high, scaling_type="Logarithmic" if self.log else "Linear")


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (numbers, strings, booleans;
    a config group option such as ``model=resnet18`` too)."""

    key: str
    choices: Sequence[Any]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError(f"tune.space {self.key}: choices must not be empty")

    def suggest(self, trial) -> Any:
        return trial.suggest_categorical(self.key, list(self.choices))

    def sagemaker(self):
        from sagemaker.tuner import CategoricalParameter

        return CategoricalParameter([hydra_value(c) for c in self.choices])


Param = Continuous | Integer | Categorical


def build_space(nodes: Mapping[str, Any] | None) -> dict[str, Param]:
    """``tune.space`` → {entry name: parameter}; null entries are dropped (``tune.space.momentum=null``)."""
    space = {}
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        try:
            param = hydra.utils.instantiate(node, _convert_="all")
        except InstantiationException as exc:
            if isinstance(exc.__cause__, ConfigError):
                raise exc.__cause__ from None
            raise ConfigError(f"tune.space.{name}: {exc}") from None
        if not isinstance(param, Continuous | Integer | Categorical):
            raise ConfigError(
                f"tune.space.{name} must instantiate launch.space.Continuous, Integer or Categorical"
            )
        space[name] = param
    if not space:
        raise ConfigError("tune.space is empty: nothing to tune")
    return space


def override(param: Param, value: Any) -> str:
    """The Hydra override that applies ``value`` (``model.lr=0.0123``)."""
    return f"{param.key}={hydra_value(value)}"
