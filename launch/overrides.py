"""Hydra override strings ↔ SageMaker hyperparameters, shared by the launcher and the in-job shim.

A training override ``model.lr=0.01`` travels to a SageMaker job as the hyperparameter
``{"model.lr": "0.01"}`` and comes back, inside the container, as ``--model.lr 0.01`` (categoricals that
a tuner chose arrive JSON-quoted: ``--model.optimizer '"adam"'``). These helpers keep both directions in
one place. This module must import nothing but the standard library: it runs inside the job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

# Override roots that configure the launcher itself, never the training job.
LAUNCH_ROOTS = frozenset({"launch", "tune", "deploy", "backend", "hydra", "paths"})
_BARE = re.compile(r"[A-Za-z0-9_./:@+\-~%]+")


def split_override(override: str) -> tuple[str, str | None]:
    """``"+model.lr=0.1"`` → ``("+model.lr", "0.1")``; ``"~callbacks.x"`` → ``("~callbacks.x", None)``."""
    key, sep, value = override.partition("=")
    return key.strip(), (value if sep else None)


def root_of(key: str) -> str:
    """First path element of an override key, without ``+``/``++``/``~`` prefixes
    (``tune/pruner`` → ``tune``)."""
    return re.split(r"[./]", key.lstrip("+~"), maxsplit=1)[0]


def training_overrides(overrides: Iterable[str]) -> list[str]:
    """The CLI overrides that configure training (everything not under launch/tune/deploy/hydra/paths)."""
    return [o for o in overrides if root_of(split_override(o)[0]) not in LAUNCH_ROOTS]


def hydra_value(value: object) -> str:
    """Render a Python value as a Hydra override value (quoted when the grammar needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_hyperparameters(overrides: Sequence[str]) -> dict[str, str]:
    """Training overrides → SageMaker hyperparameters (the value text is kept verbatim:
    it is Hydra syntax)."""
    hps: dict[str, str] = {}
    for override in overrides:
        key, value = split_override(override)
        hps[key] = "" if value is None else value
    return hps


def from_hyperparameter(key: str, value: str) -> str:
    """One hyperparameter as it reaches the job → a Hydra override.

    JSON-quoted strings (``'"adam"'``, what the tuner sends for categoricals) are decoded and re-quoted for
    Hydra if needed; anything else is already Hydra syntax (numbers, lists, the user's own quoting).
    """
    if key.startswith("~") and value == "":
        return key
    text = value.strip()
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            decoded = None
        if isinstance(decoded, str):
            return f"{key}={hydra_value(decoded)}"
    return f"{key}={value}"


# SDK v3's job driver (sm_train.sh) exports every hyperparameter as the shell variable SM_HP_<NAME> and
# stops at the first name a shell rejects ("export: `SM_HP_MODEL.LR=…': not a valid identifier"): names may
# hold only letters, digits, "_" and "-". Under v3 a dotted key travels with "__" for each ".".
V3_DOT = "__"


def v3_hyperparameter_name(key: str) -> str:
    """``model.lr`` → ``model__lr``, a hyperparameter name SDK v3's driver can export."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key) or V3_DOT in key:
        raise ValueError(
            f"hyperparameter {key!r} cannot pass through SDK v3's job driver: use letters, digits, '_', "
            "'-' and '.' only (no '+'/'~' prefix, no '__')"
        )
    return key.replace(".", V3_DOT)


def from_v3_hyperparameter_name(name: str) -> str:
    """Inverse of :func:`v3_hyperparameter_name` (names without ``__`` are returned unchanged)."""
    return name.replace(V3_DOT, ".")
