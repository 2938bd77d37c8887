"""Callback state in a checkpoint that ``torch.load(weights_only=True)`` can read back.

``weights_only`` loading (the only safe way to open a checkpoint) accepts tensors and plain containers,
not dataclasses or NumPy arrays, and a pickle smuggled inside as bytes would defeat it. ``pack`` turns a
dataclass tree into dicts, lists, numbers, strings and tensors; ``unpack`` rebuilds it from the
dataclass's type hints, so the callbacks' ``state_dict``/``load_state_dict`` stay two lines each.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import numpy as np
import torch


def pack(obj: Any) -> Any:
    """Dataclasses → dicts, NumPy arrays → tensors, tuples → lists; everything else as it is."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: pack(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)).clone()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {key: pack(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [pack(value) for value in obj]
    return obj


def unpack(data: Any, hint: Any) -> Any:
    """Rebuild a value of type ``hint`` (a dataclass, ``list[…]``, ``dict[str, …]``, ``tuple[…]``,
    ``np.ndarray``, ``X | None``) from what :func:`pack` produced."""
    if data is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return unpack(data, options[0]) if len(options) == 1 else data
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        names = {f.name for f in dataclasses.fields(hint) if f.init}
        return hint(**{k: unpack(v, hints[k]) for k, v in data.items() if k in names})
    if hint is np.ndarray:
        return data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if origin is list:
        return [unpack(v, args[0] if args else Any) for v in data]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(unpack(v, args[0]) for v in data)
        return tuple(unpack(v, a) for v, a in zip(data, args, strict=True)) if args else tuple(data)
    if origin is dict:
        value_hint = args[1] if args else Any
        return {k: unpack(v, value_hint) for k, v in data.items()}
    return data
