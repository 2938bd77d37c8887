"""Where the Hydra configs live, how to compose them without ``@hydra.main``, how to instantiate a node so a
bad value shows its own message, the ``${precision:…}`` resolver, and early validation.

Torch-free on purpose: ``launch/`` validates a config with this module in environments without torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

_PKG = Path(__file__).resolve().parent
# Installed wheel: dogbreed/conf; source checkout / editable install: <repo>/conf.
CONFIG_DIR = next(
    (p for p in (_PKG / "conf", _PKG.parent / "conf") if (p / "train.yaml").is_file()), _PKG.parent / "conf"
)


class ConfigError(ValueError):
    """A composed config value is missing or invalid; the message names the key."""


def resolve_precision(request: str = "auto", *, _parent_: DictConfig | None = None) -> str:
    """``trainer.precision: ${precision:auto}``: ``auto`` becomes bf16-mixed where bf16 is native on the
    trainer's accelerator, 16-mixed on older GPUs, else 32-true (``dogbreed.perf.auto_precision``, the
    probe the profiler's advice uses too); any other request is returned as it is. Resolved where the config
    is used, so ``--cfg job --resolve``, the run page and MLflow's params show what the trainer ran with."""
    if str(request) != "auto":
        return str(request)
    from dogbreed.perf import auto_precision

    accelerator = _parent_.get("accelerator", "auto") if _parent_ is not None else "auto"
    return auto_precision(str(accelerator))


def _precision_request(request: str = "auto", *, _parent_: DictConfig | None = None) -> str:
    return str(request)


OmegaConf.register_new_resolver("precision", resolve_precision, replace=True)


@contextmanager
def _requests_only() -> Iterator[None]:
    """Resolve ``${precision:auto}`` to ``auto`` meanwhile: checking a config probes no hardware (and imports
    no torch: the launcher checks the config of a job that runs elsewhere)."""
    OmegaConf.register_new_resolver("precision", _precision_request, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("precision", resolve_precision, replace=True)


def compose(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose a config like the CLI does (for tests, notebooks and launch/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(
            config_name=config_name, overrides=list(overrides or []), return_hydra_config=False
        )


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises the target's own error (e.g. DatasetError, ValueError
    naming the key) instead of Hydra's wrapper, so users see the actionable message first."""
    import hydra
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise


FREEZE_POLICIES = ("frozen", "full", "gradual")


def freeze_policy(freeze: bool | str) -> str:
    """``model.freeze``: ``true`` is frozen, ``false`` full, a string one of FREEZE_POLICIES."""
    if isinstance(freeze, bool):
        return "frozen" if freeze else "full"
    if freeze not in FREEZE_POLICIES:
        raise ConfigError(f"model.freeze={freeze!r} must be {', '.join(FREEZE_POLICIES)} (or true/false)")
    return freeze


def at_least(key: str, value: float | None, minimum: float, hint: str = "") -> None:
    """``key=value`` must be >= ``minimum`` (None passes: the caller allows it or checked it already)."""
    if value is not None and value < minimum:
        raise ConfigError(f"{key}={value} must be >= {minimum}{hint}")


def _require(cfg: DictConfig, key: str, kind: type | tuple[type, ...], allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{key} is required but not set (pass {key}=…)")
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ConfigError(f"{key}={value!r} must be {names}{' or null' if allow_none else ''}")


def _lr_monitor_has_a_logger(cfg: DictConfig) -> None:
    """Lightning's LearningRateMonitor refuses a Trainer without loggers (logger=none also nulls it)."""
    callbacks = cfg.get("callbacks") or {}
    monitors = [
        name
        for name, node in callbacks.items()
        if node is not None and str(node.get("_target_", "")).endswith("LearningRateMonitor")
    ]
    if monitors and not any(node is not None for node in (cfg.get("logger") or {}).values()):
        raise ConfigError(
            f"callbacks.{monitors[0]} (LearningRateMonitor) needs a logger and every logger.* is null: "
            f"pass callbacks.{monitors[0]}=null too (logger=none does both)"
        )


def validate(cfg: DictConfig) -> None:
    """Check the keys users override most, before anything slow happens. The value rules (``freeze_policy``,
    ``at_least``) are the ones the model and the datamodule apply when built from Python."""
    for section in ("data", "model", "trainer", "paths"):
        if section not in cfg or not isinstance(cfg[section], DictConfig):
            raise ConfigError(f"config group '{section}' is missing from the composed config")
    try:
        with _requests_only():
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # omegaconf raises several types; all mean "this key is not usable"
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(f"{key or 'config'}: {getattr(exc, 'msg', exc)}") from None
    _require(cfg, "data.root", str)
    _require(cfg, "data.batch_size", int)
    _require(cfg, "data.num_workers", int, allow_none=True)
    _require(cfg, "model.backbone", str)
    _require(cfg, "model.weights", str, allow_none=True)
    _require(cfg, "model.weights_file", str, allow_none=True)
    _require(cfg, "model.lr", (float, int))
    _require(cfg, "trainer.max_epochs", int)
    _require(cfg, "seed", int, allow_none=True)
    _require(cfg, "ckpt_path", str, allow_none=True)
    at_least("data.batch_size", cfg.data.batch_size, 1)
    at_least("data.num_workers", cfg.data.num_workers, 0, " (or null for automatic)")
    at_least("model.lr", cfg.model.lr, 0)
    freeze_policy(cfg.model.get("freeze"))
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    _lr_monitor_has_a_logger(cfg)
