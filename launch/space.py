"""One search for both tuners: the space, the objective's direction and the best config.

Each parameter becomes an Optuna suggestion or a SageMaker range. A parameter names the Hydra key it sets
(``key: model.lr``); that key is the Optuna parameter name and the SageMaker hyperparameter name, and a
chosen value becomes the override ``model.lr=<value>``. Spaces live in ``conf/tune/*.yaml`` under
``tune.space`` (entries are instantiated with ``_target_``). Both backends rank by ``direction(tune)`` and
write the winner as ``best.yaml`` through ``best_config``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from dogbreed.config import CONFIG_DIR, ConfigError, compose
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


def grid_size(space: Mapping[str, Param]) -> int:
    """The number of points of a categorical-only space (what a Grid search runs)."""
    return math.prod(len(p.choices) for p in space.values() if isinstance(p, Categorical))


def override(param: Param, value: Any) -> str:
    """The Hydra override that applies ``value`` (``model.lr=0.0123``)."""
    return f"{param.key}={hydra_value(value)}"


def sagemaker_range(param: Param, parameters: ModuleType) -> Any:
    """``param`` as a SageMaker range; ``parameters`` is the SDK's module of range classes (v2:
    ``sagemaker.tuner``, v3: ``sagemaker.core.parameter``: the same classes and signatures).
    Categorical values travel as Hydra override text."""
    if isinstance(param, Categorical):
        return parameters.CategoricalParameter([hydra_value(c) for c in param.choices])
    cls = parameters.ContinuousParameter if isinstance(param, Continuous) else parameters.IntegerParameter
    return cls(param.low, param.high, scaling_type="Logarithmic" if param.log else "Linear")


def direction(tune: DictConfig) -> str:
    """``maximize`` or ``minimize`` the objective (``tune.direction``; auto minimises ``*_loss``)."""
    choice = tune.get("direction") or "auto"
    if choice == "auto":
        return "minimize" if str(tune.objective).endswith("loss") else "maximize"
    if choice not in ("maximize", "minimize"):
        raise ConfigError(f"tune.direction={choice!r} must be maximize, minimize or auto")
    return choice


def best_config(base: Sequence[str], chosen: Sequence[str]) -> DictConfig:
    """A complete training config for the best trial, runnable with ``--config-path/--config-name``."""
    cfg = compose("train", [*base, *chosen])
    with open_dict(cfg):
        cfg.hydra = OmegaConf.load(Path(CONFIG_DIR) / "hydra" / "default.yaml")
    return cfg
