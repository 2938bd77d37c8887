"""The optional smdebug side: attach a hook (SageMaker's inside a job, a local one otherwise) and read trials.

Only imported when the ``smdebug`` extra is installed. smdebug 1.0.34 still calls NumPy's removed
``ndarray.tostring``; :func:`patch_numpy2` is the one place that works around it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dogbreed.debug.stats import (
    Columns,
    History,
    StepRecord,
    TensorStats,
    numpy_stats,
    percentile_spread,
    unit_activity,
)

log = logging.getLogger("dogbreed.debug")
MODES = ("auto", "sagemaker", "local", "off")


def available() -> bool:
    return importlib.util.find_spec("smdebug") is not None


def patch_numpy2() -> None:
    """Make smdebug's writer use ``ndarray.tobytes()`` (same bytes) instead of ``tostring()``
    (gone in NumPy 2).

    smdebug builds every TensorProto in ``smdebug.core.tfevent.util.make_tensor_proto`` (imported by name into
    ``smdebug.core.writer``); both references are replaced. Idempotent; a no-op on NumPy < 2.
    """
    if hasattr(np.ndarray, "tostring"):
        return
    from smdebug.core import writer
    from smdebug.core.tfevent import util

    if getattr(util.make_tensor_proto, "_dogbreed_patched", False):
        return
    original = util.make_tensor_proto

    def make_tensor_proto(nparray_data: np.ndarray, tag: str) -> Any:
        is_number, dtype = util._get_proto_dtype(nparray_data.dtype)
        if not is_number:  # strings: smdebug's own code never calls tostring() for them
            return original(nparray_data, tag)
        dims = [util.TensorShapeProto.Dim(size=d, name=f"{tag}_{d}") for d in nparray_data.shape]
        return util.TensorProto(
            dtype=dtype, tensor_content=nparray_data.tobytes(), tensor_shape=util.TensorShapeProto(dim=dims)
        )

    make_tensor_proto._dogbreed_patched = True  # type: ignore[attr-defined]
    util.make_tensor_proto = make_tensor_proto
    writer.make_tensor_proto = make_tensor_proto


def _import_smdebug() -> Any:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")
    import smdebug.pytorch as smd

    patch_numpy2()
    return smd


class SmdebugHook:
    """An smdebug hook on the LightningModule recording losses, weights, biases and gradients.

    ``mode``: ``auto`` uses SageMaker's configured hook inside a training job and a local one writing to
    ``out_dir`` elsewhere; ``sagemaker`` only the job's; ``local`` always a local one.

    smdebug counts a step when the registered module's ``forward`` runs, but a LightningModule's step need
    not call it (a frozen backbone with cached features runs only the head). So after ``register_module``
    (which also hooks every parameter's gradient) its forward hooks come off again and :meth:`step` starts
    one smdebug step per Lightning batch; that also spares every submodule a Python hook per forward.
    """

    def __init__(self, mode: str, out_dir: str | Path, train_interval: int, eval_interval: int) -> None:
        smd = _import_smdebug()
        from smdebug import modes
        from smdebug.core.config_constants import CONFIG_FILE_PATH_ENV_STR, DEFAULT_CONFIG_FILE_PATH
        from smdebug.core.singleton_utils import del_hook

        self._modes = modes
        # Inside a job SageMaker writes the DebugHookConfig here; get_hook builds the hook from it.
        in_job = Path(os.getenv(CONFIG_FILE_PATH_ENV_STR, DEFAULT_CONFIG_FILE_PATH)).is_file()
        hook = smd.get_hook(create_if_not_exists=True) if mode in ("auto", "sagemaker") and in_job else None
        self.sagemaker = hook is not None
        if hook is None and mode in ("auto", "local"):
            save = smd.SaveConfig(
                mode_save_configs={
                    modes.TRAIN: smd.SaveConfigMode(save_interval=train_interval),
                    modes.EVAL: smd.SaveConfigMode(save_interval=eval_interval),
                }
            )
            hook = smd.Hook(
                out_dir=str(out_dir),
                save_config=save,
                include_collections=["losses", "weights", "biases", "gradients"],
            )
            # every smdebug Hook makes itself the process singleton; a local one must not pose as the job's
            del_hook()
        self.hook = hook
        self.out_dir = str(getattr(hook, "out_dir", out_dir)) if hook is not None else None
        self._module: nn.Module | None = None

    @property
    def active(self) -> bool:
        return self.hook is not None

    def _owned(self, fn: Any) -> bool:
        cells = getattr(fn, "__closure__", None) or ()
        return getattr(fn, "__self__", None) is self.hook or any(c.cell_contents is self.hook for c in cells)

    def _remove_hooks(self, module: nn.Module, gradients: bool) -> None:
        for sub in module.modules():
            for hooks in (sub._forward_pre_hooks, sub._forward_hooks):
                for key in [k for k, fn in hooks.items() if self._owned(fn)]:
                    del hooks[key]
        if gradients:
            for param in module.parameters():
                hooks = param._backward_hooks or {}
                for key in [k for k, fn in hooks.items() if self._owned(fn)]:
                    del hooks[key]

    def attach(self, module: nn.Module) -> None:
        if self.hook is not None and self._module is None:
            self.hook.register_module(module)
            self._remove_hooks(module, gradients=False)
            self._module = module

    def step(self, train: bool) -> None:
        """Start the next smdebug step (TRAIN or EVAL): saves weights on save steps, closes the last step."""
        if self.hook is not None and self._module is not None:
            self.hook.set_mode(self._modes.TRAIN if train else self._modes.EVAL)
            self.hook.forward_pre_hook(self._module, ())

    def record(self, name: str, value: Any) -> None:
        if self.hook is not None and self._module is not None:
            self.hook.record_tensor_value(name, value.detach())

    def close(self) -> None:
        """Flush and close the writers and take the gradient hooks off the parameters."""
        if self.hook is None or self._module is None:
            return
        self.hook.close()
        self._remove_hooks(self._module, gradients=True)
        self._module = None


def _group_eval(points: list[tuple[int, int, float]]) -> list[tuple[int, float]]:
    """(train steps done, eval mode step, loss) → one mean per validation run (same train steps done)."""
    runs: dict[int, list[float]] = defaultdict(list)
    for done, _eval_step, value in points:
        runs[done].append(value)
    return [(done, float(np.mean(values))) for done, values in sorted(runs.items())]


def load_trial(
    path: str | Path,
    first_steps: int = 10,
    input_regex: str = ".*relu_input",
    output_regex: str = ".*relu_output",
) -> History:
    """Read an smdebug trial (local folder, e.g. a SageMaker job's downloaded ``debug-output``) into a
    History.

    Losses come from the ``losses`` collection (TRAIN mode: the saved steps' own losses, so noisier than
    the live history's interval means; EVAL mode: one mean per validation run); gradients/weights/biases
    from their collections; tensors matching ``input_regex`` /
    ``output_regex`` feed PoorWeightInitialization/DeadRelu. The 5–95 percentile spread of the gradients is
    computed for TRAIN steps below ``first_steps``. A weight's update at a saved step is its change until the
    next saved step (one optimizer step when weights are saved every step, as SageMaker's rule requires).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such directory (give an smdebug trial folder, e.g. a SageMaker job's debug-output)"
        )
    if not (path / "index").is_dir() and not (path / "events").is_dir():
        raise ValueError(
            f"{path}: not an smdebug trial (expected index/ and events/ inside; a SageMaker job writes them "
            "under debug-output/)"
        )
    _import_smdebug()
    from smdebug import modes
    from smdebug.trials import create_trial

    trial = create_trial(str(path))
    train = modes.TRAIN

    def collection(name: str) -> list[str]:
        return trial.tensor_names(collection=name) if name in trial.collections() else []

    def values(name: str, mode: Any = train) -> list[tuple[int, np.ndarray]]:
        tensor = trial.tensor(name)
        return [(step, np.asarray(tensor.value(step, mode=mode))) for step in tensor.steps(mode=mode)]

    history = History()
    names = trial.tensor_names()
    losses = collection("losses") or [n for n in names if "loss" in n.lower()]
    train_points: dict[int, list[float]] = defaultdict(list)
    eval_points: list[tuple[int, int, float]] = []
    for name in losses:
        for step, value in values(name):
            train_points[step].append(float(np.mean(value)))
        for step, value in values(name, modes.EVAL):
            eval_points.append((trial.global_step(modes.EVAL, step) - step, step, float(np.mean(value))))
    history.train_loss = [(s, float(np.mean(v))) for s, v in sorted(train_points.items())]
    history.val_loss = _group_eval(eval_points)
    history.has_validation = bool(eval_points)

    records: dict[int, StepRecord] = {}

    def record(step: int) -> StepRecord:
        return records.setdefault(step, StepRecord(step))

    grads = collection("gradients")
    rows: dict[str, dict[int, dict[str, Any]]] = {
        "gradients": defaultdict(dict),
        "weights": defaultdict(dict),
        "updates": defaultdict(dict),
    }
    early_grads: dict[int, list[np.ndarray]] = defaultdict(list)
    for name in grads:
        layer = name.split("/", 1)[-1]
        history.layers.append(layer)
        for step, value in values(name):
            rows["gradients"][step][layer] = numpy_stats(value)
            if step < first_steps:
                early_grads[step].append(value)
    for step, arrays in early_grads.items():
        record(step).grad_spread = percentile_spread(arrays)
    # Frozen weights never change; with gradients saved, only weights that have one count as updated.
    trainable = set(history.layers)
    weights = {n for n in collection("weights") if not trainable or n in trainable}
    for name in sorted(set(collection("weights")) | set(collection("biases"))):
        previous: tuple[int, np.ndarray] | None = None
        for step, value in values(name):
            value = value.astype(np.float64)
            rows["weights"][step][name] = numpy_stats(value)
            if previous is not None and name in weights:  # the update made from the previous saved step on
                before_step, before = previous
                rows["updates"][before_step][name] = (
                    float(np.linalg.norm(value - before)),
                    float(np.linalg.norm(before)),
                )
            previous = (step, value)
    for kind, by_step in rows.items():
        fields = ("update_norm", "weight_norm") if kind == "updates" else TensorStats._fields
        for step, per_layer in by_step.items():
            setattr(record(step), kind, Columns.from_rows(per_layer, fields))
    inputs, outputs = re.compile(input_regex), re.compile(output_regex)
    for name in names:
        if inputs.match(name):
            for step, value in values(name):
                record(step).act_var[name] = float(np.var(value))
        elif outputs.match(name):
            for step, value in values(name):
                record(step).relu_activity[name] = unit_activity(torch.from_numpy(value)).numpy()
    for step, losses_at_step in train_points.items():
        if step in records:
            records[step].loss = float(np.mean(losses_at_step))
    history.records = [records[s] for s in sorted(records)]
    return history
