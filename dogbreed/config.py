"""Where the Hydra configs live, how to compose them without ``@hydra.main``, how to instantiate a node so a
bad value shows its own message, and early validation."""

from __future__ import annotations

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


def validate(cfg: DictConfig) -> None:
    """Check the keys users override most, before anything slow happens."""
    for section in ("data", "model", "trainer", "paths"):
        if section not in cfg or not isinstance(cfg[section], DictConfig):
            raise ConfigError(f"config group '{section}' is missing from the composed config")
    try:
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
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be >= 1")
    if cfg.data.num_workers is not None and cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers} must be >= 0 (or null for automatic)")
    if cfg.model.lr < 0:
        raise ConfigError(f"model.lr={cfg.model.lr} must be >= 0")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    freeze = cfg.model.get("freeze")
    if not isinstance(freeze, bool) and freeze not in ("frozen", "full", "gradual"):
        raise ConfigError(f"model.freeze={freeze!r} must be frozen, full, gradual (or true/false)")
