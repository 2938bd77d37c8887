"""What the Debugger records: loss series and per-layer tensor statistics at SageMaker-style save steps.

Everything the rules read lives in a :class:`History`, so the same rules run live (the callback fills it)
and offline (``python -m dogbreed.debug analyze`` fills it from an smdebug trial).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

# Activation modules whose inputs/outputs the PoorWeightInitialization and DeadRelu rules inspect.
RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
RELU_INPUT = "_relu_input"
RELU_OUTPUT = "_relu_output"


class TensorStats(NamedTuple):
    """Reductions of one tensor: L2 norm, mean |x| and fraction of zeros.

    NaN/inf propagate into the norm, so a non-finite norm means a non-finite tensor (or one whose squares
    overflow, ~1e19: exploded all the same); a separate max |x| would double the cost for nothing.
    """

    norm: float
    mean_abs: float
    zero_frac: float


_EMPTY = np.zeros(0)


@dataclass
class Columns:
    """Per-layer numbers of one step, one NumPy array per quantity (``norm``, ``mean_abs``, ...).

    Columns rather than an object per layer: a saved step then allocates a handful of Python objects,
    not hundreds, and the garbage collector (whose full passes cost whole steps) stays quiet.
    """

    names: tuple[str, ...] = ()
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, column: str) -> np.ndarray:
        return self.values.get(column, _EMPTY)

    def pick(self, mask: np.ndarray) -> list[str]:
        """Names where ``mask`` is true."""
        return [self.names[i] for i in np.flatnonzero(mask)]

    @classmethod
    def from_rows(
        cls, rows: dict[str, Sequence[float]], fields: Sequence[str] = TensorStats._fields
    ) -> Columns:
        """``{name: (one value per field…)}`` → Columns."""
        table = np.array([list(r) for r in rows.values()], dtype=np.float64).reshape(len(rows), len(fields))
        return cls(tuple(rows), {f: table[:, i] for i, f in enumerate(fields)})


def tensor_stats(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> Columns:
    """norm / mean_abs / zero_frac columns with three fused ``_foreach_norm`` calls and one host copy."""
    if not tensors:
        return Columns()
    flat = [t.detach() for t in tensors]
    norm, l1, nonzero = (
        torch.stack([torch.stack(torch._foreach_norm(flat, order)).double() for order in (2.0, 1.0, 0.0)])
        .cpu()
        .numpy()
    )
    numels = np.array([max(1, t.numel()) for t in flat], dtype=np.float64)
    return Columns(tuple(names), {"norm": norm, "mean_abs": l1 / numels, "zero_frac": 1.0 - nonzero / numels})


def numpy_stats(array: np.ndarray) -> TensorStats:
    """:class:`TensorStats` of a NumPy array (smdebug trials hold NumPy values)."""
    a = np.abs(np.asarray(array, dtype=np.float64)).ravel()
    if a.size == 0:
        return TensorStats(0.0, 0.0, 1.0)
    return TensorStats(float(np.sqrt(np.sum(a * a))), float(a.mean()), float(np.mean(a == 0)))


def percentile_spread(tensors: Iterable[torch.Tensor | np.ndarray], max_elements: int = 1_000_000) -> float:
    """95th minus 5th percentile of all values together (an evenly strided sample above ``max_elements``)."""
    parts = [
        np.asarray(t.detach().float().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float32).ravel()
        for t in tensors
    ]
    values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if values.size == 0:
        return float("nan")
    if values.size > max_elements:
        values = values[:: values.size // max_elements + 1]
    p5, p95 = np.percentile(values, [5.0, 95.0])
    return float(p95 - p5)


def unit_activity(output: torch.Tensor) -> torch.Tensor:
    """Per unit (dim 1, or one unit for 1-D), the percentage of positions where a ReLU output is > 0."""
    active = (output.detach() > 0).float()
    if active.dim() < 2:
        return 100.0 * active.mean().reshape(1)
    return 100.0 * active.mean(dim=[d for d in range(active.dim()) if d != 1])


@dataclass
class StepRecord:
    """The tensors of one saved training step (weights and gradients are taken before the optimizer step).

    ``gradients``/``weights`` have columns norm, mean_abs, zero_frac; ``updates`` has update_norm
    (‖W_after − W_before‖) and weight_norm (‖W_before‖) per weight; ``act_var`` maps ``<module>_relu_input``
    to the variance of that activation's input; ``relu_activity`` maps ``<module>_relu_output`` to per-unit
    activity percentages; ``grad_spread`` is the 5–95 percentile spread of all gradients; ``loss`` is this
    step's training loss.
    """

    step: int
    gradients: Columns = field(default_factory=Columns)
    weights: Columns = field(default_factory=Columns)
    updates: Columns = field(default_factory=Columns)
    act_var: dict[str, float] = field(default_factory=dict)
    relu_activity: dict[str, np.ndarray] = field(default_factory=dict)
    grad_spread: float | None = None
    loss: float | None = None


@dataclass
class History:
    """Loss series as (step, value) and per-step tensor records, on one axis: completed optimizer steps.

    A train point is the mean loss of the steps since the previous point; a validation point is the mean
    loss of one validation run, placed at the number of optimizer steps done before it.
    """

    train_loss: list[tuple[int, float]] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    # Whether the run validates (known before the first validation point exists); None: infer from val_loss.
    has_validation: bool | None = None

    @property
    def last_step(self) -> int | None:
        steps = (
            [p[0] for p in self.train_loss] + [p[0] for p in self.val_loss] + [r.step for r in self.records]
        )
        return max(steps) if steps else None

    def grad_norms(self) -> tuple[list[str], list[int], np.ndarray]:
        """(layers in model order, steps, matrix layers × steps of gradient L2 norms; NaN where missing)."""
        recs = [r for r in self.records if r.gradients]
        seen = {n for r in recs for n in r.gradients.names}
        names = [n for n in self.layers if n in seen] + sorted(seen - set(self.layers))
        row = {n: i for i, n in enumerate(names)}
        matrix = np.full((len(names), len(recs)), np.nan)
        for j, rec in enumerate(recs):
            matrix[[row[n] for n in rec.gradients.names], j] = rec.gradients["norm"]
        return names, [r.step for r in recs], matrix


class ActivationProbe:
    """Forward hooks on ReLU modules for one step: input variance and per-unit output activity.

    Hooks exist only between :meth:`attach` and :meth:`detach`, so steps that are not saved pay nothing.
    Values stay on the device until :meth:`collect`.
    """

    def __init__(self, modules: Sequence[tuple[str, nn.Module]]) -> None:
        self.modules = list(modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._var: dict[str, torch.Tensor] = {}
        self._activity: dict[str, torch.Tensor] = {}

    def attach(self, inputs: bool, outputs: bool) -> None:
        self.detach()
        for name, module in self.modules:
            if inputs:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            if outputs:
                self._handles.append(module.register_forward_hook(self._post_hook(name)))

    def _pre_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                # ReLU may be in-place: reduce now, before the input is overwritten.
                self._var[name + RELU_INPUT] = args[0].detach().float().var(unbiased=False)

        return hook

    def _post_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor):
                self._activity[name + RELU_OUTPUT] = unit_activity(output)

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def collect(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Detach and return (input variances, per-unit activity %) with one host copy each."""
        self.detach()
        var_names = list(self._var)
        variances = (
            dict(zip(var_names, torch.stack([self._var[n] for n in var_names]).cpu().tolist(), strict=True))
            if var_names
            else {}
        )
        activity: dict[str, np.ndarray] = {}
        if self._activity:
            names = list(self._activity)
            sizes = [self._activity[n].numel() for n in names]
            flat = torch.cat([self._activity[n].float() for n in names]).cpu().numpy()
            for name, chunk in zip(names, np.split(flat, np.cumsum(sizes)[:-1]), strict=True):
                activity[name] = chunk.astype(np.float32)
        self._var, self._activity = {}, {}
        return variances, activity


def trainable_relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """ReLU modules inside top-level children that have trainable parameters.

    Frozen (pretrained) parts are skipped: their initialisation and dead units are not this run's to fix.
    """
    found = []
    for child_name, child in model.named_children():
        if not any(p.requires_grad for p in child.parameters()):
            continue
        for name, module in child.named_modules(prefix=child_name):
            if isinstance(module, RELU_TYPES):
                found.append((name, module))
    return found


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
