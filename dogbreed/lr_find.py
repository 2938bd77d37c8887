"""``python -m dogbreed.lr_find [training overrides]``: Lightning's learning-rate finder on the configured
model and data, before you train.

It runs ``Tuner.lr_find`` (LR rising exponentially over 100 training steps from 1e-8 to 1, Lightning's
defaults; the model is restored afterwards), writes the loss-vs-LR plot and the numbers to
``<paths.output_dir>/reports/lr_find.png|json``, and prints the suggestion (where the loss falls fastest
per decade of LR, see ``steepest``) with the exact command that trains with it. Inside a training run,
``lr_find=true`` does the same before the fit (the plot lands on the run page) and ``lr_find=apply`` also
trains that run with the suggestion.

    python -m dogbreed.lr_find experiment=demo
    python -m dogbreed.train experiment=demo lr_find=apply
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from dogbreed.atomic import write_bytes, write_json
from dogbreed.config import CONFIG_DIR, ConfigError, validate

log = logging.getLogger("dogbreed.lr_find")
BETA = 0.98  # the smoothing of Lightning's finder loss (_LRCallback's default)


@dataclass
class LRFindResult:
    suggestion: float | None
    override: str | None
    applied: bool
    configured_lr: float
    lrs: list[float]
    losses: list[float]
    plot: str
    json: str


def mode(cfg: DictConfig) -> bool | str:
    """``lr_find``: false | true | apply (checked here, so a typo fails before anything slow)."""
    value = cfg.get("lr_find", False)
    if not (value is True or value is False or value == "apply"):
        raise ConfigError(f"lr_find={value!r} must be false, true or apply")
    return value


def unbias(losses: list[float], beta: float = BETA) -> list[float]:
    """Undo an off-by-one in Lightning 2.6's smoothed finder loss.

    Its running mean is bias-corrected with ``global_step``, which is already incremented when
    ``on_train_batch_end`` runs, so point k is divided by 1 - β^(k+2) instead of 1 - β^(k+1): the first
    loss comes out about halved and the curve climbs for its first ~50 steps at learning rates far too
    small to change anything. (The finder starts at step 0 here: it runs before any training.)"""
    return [x * (1 - beta ** (k + 2)) / (1 - beta ** (k + 1)) for k, x in enumerate(losses)]


def steepest(lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The LR where the loss falls fastest per decade (gradient against log10 LR, fastai's "steep").

    Lightning's ``suggestion()`` takes the gradient against the LR itself: at tiny LRs the spacing is tiny,
    so noise there wins (1e-7 on the demo, whose loss only falls above 1e-3). Same points skipped."""
    points = [
        (math.log10(lr), loss)
        for lr, loss in list(zip(lrs, losses, strict=True))[skip_begin : len(lrs) - skip_end]
        if math.isfinite(loss)
    ]
    if len(points) < 3:
        return None
    xs, ys = zip(*points, strict=True)
    grads = torch.gradient(
        torch.tensor(ys, dtype=torch.float64), spacing=[torch.tensor(xs, dtype=torch.float64)]
    )
    return float(10 ** xs[int(torch.argmin(grads[0]))])


def _figure(lrs: list[float], losses: list[float], suggestion: float | None, configured: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses, label="training loss (running mean)")
    if suggestion is not None:
        ax.axvline(suggestion, color="#c44e52", linestyle="--", label=f"suggestion {suggestion:.3g}")
    if configured > 0:
        ax.axvline(configured, color="#888", linestyle=":", label=f"model.lr {configured:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate finder (Lightning Tuner.lr_find)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def find_lr(cfg: DictConfig, objects: dict[str, Any], apply: bool = False) -> LRFindResult | None:
    """Run the finder on ``objects`` (from ``dogbreed.train.build``); with ``apply`` the model (and
    ``cfg.model.lr``) take the suggestion. Returns None when Lightning skips it (fast_dev_run)."""
    from lightning.pytorch.tuner import Tuner

    from dogbreed.evaluate.plots import to_png

    trainer, model, datamodule = objects["trainer"], objects["model"], objects["datamodule"]
    configured = float(model.hparams.lr)
    # The finder's fit must not run this run's callbacks (reports, checkpoints) or log to its loggers, and
    # its 100 steps must not be cut short by trainer.max_epochs on a small dataset (it sets max_steps).
    callbacks, loggers, max_epochs = trainer.callbacks, trainer.loggers, trainer.fit_loop.max_epochs
    trainer.callbacks, trainer.loggers, trainer.fit_loop.max_epochs = [], [], -1
    try:
        finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False)
    finally:
        trainer.callbacks, trainer.loggers, trainer.fit_loop.max_epochs = callbacks, loggers, max_epochs
    if finder is None:
        return None
    lrs = [float(x) for x in finder.results["lr"]]
    losses = unbias([float(x) for x in finder.results["loss"]])
    suggestion = steepest(lrs, losses)
    applied = bool(apply and suggestion is not None)
    if applied:  # the fit's configure_optimizers reads hparams.lr
        model.hparams.lr = cfg.model.lr = float(suggestion)
    reports = Path(cfg.paths.output_dir) / "reports"
    plot = write_bytes(reports / "lr_find.png", to_png(_figure(lrs, losses, suggestion, configured)))
    override = f"model.lr={suggestion:.3g}" if suggestion is not None else None
    result = LRFindResult(suggestion, override, applied, configured, lrs, losses, str(plot), "")
    result.json = str(reports / "lr_find.json")
    write_json(result.json, asdict(result))
    return result


def print_result(result: LRFindResult | None, task_overrides: list[str] | None = None) -> None:
    """The suggestion and the command that uses it (``task_overrides``: this command's own overrides)."""
    if result is None:
        print("lr_find: skipped (fast_dev_run)", flush=True)
        return
    print(f"LR finder plot: {result.plot}", flush=True)
    if result.suggestion is None:
        print("lr_find: no suggestion (too few training steps; see the plot)", flush=True)
        return
    verb = "training with it" if result.applied else "use it with"
    print(f"lr_find: suggested model.lr={result.suggestion:.3g} ({verb} {result.override})", flush=True)
    if task_overrides is not None:
        kept = [o for o in task_overrides if not o.startswith(("model.lr=", "lr_find=", "paths.output_dir="))]
        args = " ".join(shlex.quote(o) for o in [*kept, result.override])
        print(f"Train with it: python -m dogbreed.train {args}", flush=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    import lightning.pytorch as pl
    from hydra.core.hydra_config import HydraConfig

    from dogbreed.train import USER_ERRORS, build

    try:
        validate(cfg)
        if cfg.get("seed") is not None:
            pl.seed_everything(int(cfg.seed), workers=True)
        result = find_lr(cfg, build(cfg))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    print_result(result, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
