"""DebuggerCallback: SageMaker Debugger's collections and built-in rules, locally, inside any Lightning fit.

Every step it sums the training loss on the device (no sync). At save steps (every ``train.save_interval``
steps, plus the first ``PoorWeightInitialization.steps`` steps) it records per-layer gradient and weight
statistics, the update/weight ratio and ReLU activity; after each validation run, the validation loss.
Rules run on that history live (``action: stop`` ends the fit like SageMaker's StopTraining action) and
again at the end, writing ``debugger.json`` and ``debugger.html``. With the ``smdebug`` extra, an smdebug
hook also records losses, weights and gradients for SageMaker's rule containers and ``create_trial``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from dogbreed.callbacks.state import pack, unpack
from dogbreed.debug import smdebug_bridge
from dogbreed.debug.builtin_rules import DebuggerRule, Finding, build_rules, run_debugger_rules
from dogbreed.debug.report import write_report
from dogbreed.debug.stats import (
    ActivationProbe,
    Columns,
    History,
    StepRecord,
    percentile_spread,
    tensor_stats,
    trainable_relus,
)
from dogbreed.rules import RuleResult

log = logging.getLogger("dogbreed.debug")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def _interval(section: Mapping[str, Any] | None, key: str, default: int) -> int:
    value = int((_plain(section) or {}).get("save_interval", default))
    if value < 1:
        raise ValueError(f"callbacks.debugger.{key}.save_interval={value} must be >= 1")
    return value


def _smdebug_mode(value: Any) -> str:
    mode = "off" if value in (None, False, "false", "none") else "auto" if value is True else str(value)
    if mode not in smdebug_bridge.MODES:
        raise ValueError(f"callbacks.debugger.smdebug={value!r}: use auto, sagemaker, local or false")
    if mode == "local" and not smdebug_bridge.available():
        raise ValueError(
            "callbacks.debugger.smdebug=local needs the smdebug extra: pip install 'dogbreed[smdebug]' "
            "(or set it to false)"
        )
    return mode


def _loss(outputs: Any) -> torch.Tensor | None:
    value = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    return value.detach() if isinstance(value, torch.Tensor) and value.numel() == 1 else None


class DebuggerCallback(pl.Callback):
    """Record tensors at save steps, evaluate Debugger rules live and at the end, write the reports.

    Args:
        output_dir: where ``debugger.json``/``debugger.html`` go (the run's ``reports/``).
        train: ``{"save_interval": N}``: record tensor statistics every N optimizer steps.
        eval: ``{"save_interval": N}``: the smdebug hook saves every Nth validation step (our own history
            keeps every validation run's mean loss, one number per run).
        rules: ``{RuleName: {action: warn|stop, **SageMaker parameters} | null}``; null switches a rule off.
        smdebug: ``sagemaker`` (the job's hook inside a SageMaker training job, none elsewhere), ``auto``
            (that, else a local one if smdebug is installed), ``local`` or ``false``.
        smdebug_dir: the local hook's trial folder (read it with ``create_trial`` or ``analyze``).
        val_loss_key: the logged metric holding the validation loss.
        html: also write the HTML page.
    """

    def __init__(
        self,
        output_dir: str | Path = "reports",
        train: Mapping[str, Any] | None = None,
        eval: Mapping[str, Any] | None = None,
        rules: Mapping[str, Mapping[str, Any] | None] | None = None,
        smdebug: str | bool = "sagemaker",
        smdebug_dir: str | Path | None = None,
        val_loss_key: str = "val_loss",
        html: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.train_interval = _interval(train, "train", 10)
        self.eval_interval = _interval(eval, "eval", 1)
        self.rules: list[DebuggerRule] = build_rules(_plain(rules))
        self.smdebug_mode = _smdebug_mode(smdebug)
        self.smdebug_dir = Path(smdebug_dir) if smdebug_dir else self.output_dir.parent / "debug-output"
        self.val_loss_key = val_loss_key
        self.html = html
        by_name = {r.name: r for r in self.rules}
        self._pwi_steps = (
            int(by_name["PoorWeightInitialization"].steps) if "PoorWeightInitialization" in by_name else 0
        )
        self._want_updates = "WeightUpdateRatio" in by_name
        self._want_activity = "DeadRelu" in by_name
        self._reset()

    def _reset(self) -> None:
        self.history = History()
        self.fired: dict[str, Finding] = {}
        self.stopped: dict[str, Any] | None = None
        self.smdebug: smdebug_bridge.SmdebugHook | None = None
        self._params: dict[str, torch.nn.Parameter] = {}
        self._probe: ActivationProbe | None = None
        self._step = 0
        self._record: StepRecord | None = None
        self._before: dict[str, torch.Tensor] = {}
        self._loss_sum: torch.Tensor | None = None
        self._loss_n = 0
        self._val_sum: torch.Tensor | None = None
        self._val_n = 0
        self._live_from = 0  # records before this index were already seen by the live per-record rules

    # -- checkpoint state: a resumed run's report covers the whole run -----------------------------------
    def state_dict(self) -> dict[str, Any]:
        pending = float(self._loss_sum) if self._loss_sum is not None else None
        return pack(
            {
                "history": self.history,
                "fired": self.fired,
                "stopped": self.stopped,
                "pending_loss": [pending, self._loss_n],
                "live_from": self._live_from,
            }
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = unpack(state_dict["history"], History)
        self.fired = unpack(state_dict["fired"], dict[str, Finding])
        self.stopped = state_dict["stopped"]
        pending, self._loss_n = state_dict["pending_loss"]
        self._loss_sum = torch.tensor(pending) if pending is not None else None
        self._live_from = int(state_dict["live_from"])

    # -- what to record -------------------------------------------------------------------------------
    def _saved(self, step: int) -> bool:
        return step % self.train_interval == 0 or step < self._pwi_steps

    def _flush_train_loss(self) -> None:
        if self._loss_n:
            mean = float(self._loss_sum / self._loss_n)
            self.history.train_loss.append((self._step, mean))
            self._loss_sum, self._loss_n = None, 0

    # -- Lightning hooks ------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._reset()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._params = dict(pl_module.named_parameters())
        self.history.layers = list(self._params)
        self.history.has_validation = (
            is_overridden("validation_step", pl_module) and trainer.limit_val_batches != 0
        )
        if self.smdebug_mode != "off" and smdebug_bridge.available():
            # After the sanity check, so smdebug's step counter starts with the first training batch.
            self.smdebug = smdebug_bridge.SmdebugHook(
                self.smdebug_mode, self.smdebug_dir, self.train_interval, self.eval_interval
            )
            self.smdebug.attach(pl_module)
            if self.smdebug.active:
                log.info(
                    "Debugger: smdebug hook (%s) writing to %s",
                    "SageMaker" if self.smdebug.sagemaker else "local",
                    self.smdebug.out_dir,
                )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = trainer.global_step
        if self.smdebug is not None:
            self.smdebug.step(train=True)
        if not self._saved(self._step):
            return
        inputs = self._step < self._pwi_steps
        outputs = self._want_activity and self._step % self.train_interval == 0
        # Looked up on every save step: what is trainable changes when a backbone unfreezes.
        relus = trainable_relus(pl_module) if inputs or outputs else []
        self._probe = ActivationProbe(relus) if relus else None
        if self._probe is not None:
            self._probe.attach(inputs=inputs, outputs=outputs)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = self._step
        if not self._saved(step) or (self._record is not None and self._record.step == step):
            return
        record = self._record = StepRecord(step)
        trainable = [(n, p) for n, p in self._params.items() if p.requires_grad]
        with_grad = [(n, p) for n, p in trainable if p.grad is not None]
        record.gradients = tensor_stats([n for n, _ in with_grad], [p.grad for _, p in with_grad])
        record.weights = tensor_stats([n for n, _ in trainable], [p for _, p in trainable])
        if step < self._pwi_steps:
            record.grad_spread = percentile_spread(p.grad for _, p in with_grad)
        if self._want_updates:
            self._before = {n: p.detach().clone() for n, p in with_grad if n.endswith("weight")}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss(outputs)
        if loss is not None:
            self._loss_sum = loss.float() if self._loss_sum is None else self._loss_sum + loss.float()
            self._loss_n += 1
            if self.smdebug is not None:
                self.smdebug.record("train_loss", loss)
        if not self._saved(self._step):
            return
        record, self._record = self._record, None
        if record is not None:
            record.loss = float(loss) if loss is not None else None
            if self._before:
                names = list(self._before)
                before = [self._before[n] for n in names]
                deltas = torch._foreach_sub([self._params[n].detach() for n in names], before)
                upd, prev = (
                    torch.stack([torch.stack(torch._foreach_norm(t)) for t in (deltas, before)])
                    .double()
                    .cpu()
                    .numpy()
                )
                record.updates = Columns(tuple(names), {"update_norm": upd, "weight_norm": prev})
                self._before = {}
            if self._probe is not None:
                record.act_var, record.relu_activity = self._probe.collect()
            self.history.records.append(record)
        if self._probe is not None:
            self._probe.detach()
            self._probe = None
        if self._step % self.train_interval == 0:
            self._flush_train_loss()
        self._evaluate_live(trainer)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._flush_train_loss()
        self._val_sum, self._val_n = None, 0

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.smdebug is not None and not trainer.sanity_checking:
            self.smdebug.step(train=False)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        loss = _loss(outputs)
        if trainer.sanity_checking or loss is None:
            return
        self._val_sum = loss.float() if self._val_sum is None else self._val_sum + loss.float()
        self._val_n += 1
        if self.smdebug is not None:
            self.smdebug.record("val_loss", loss)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics.get(self.val_loss_key)
        value = (
            float(logged)
            if logged is not None
            else float(self._val_sum / self._val_n)
            if self._val_n
            else None
        )
        if value is not None:
            self.history.val_loss.append((trainer.global_step, value))
        self._evaluate_live(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_train_loss()
        self._close()
        if trainer.is_global_zero:
            paths, results = self.write()
            issues = [r.name for r in results if r.status == "IssuesFound"]
            log.info(
                "Debugger: %s → %s",
                f"IssuesFound: {', '.join(issues)}" if issues else "no rule found issues",
                paths.get("html", paths["json"]),
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()
        if trainer.is_global_zero:
            self.write(error=f"{type(exception).__name__}: {exception}")

    def _close(self) -> None:
        if self._probe is not None:
            self._probe.detach()
        if self.smdebug is not None:
            self.smdebug.close()

    # -- rules ----------------------------------------------------------------------------------------
    def _evaluate_live(self, trainer: pl.Trainer) -> None:
        """Run the rules that have not fired yet; warn on a first finding; stop for ``action: stop``."""
        stop: tuple[DebuggerRule, Finding] | None = None
        fired_before = len(self.fired)
        new_records = replace(self.history, records=self.history.records[self._live_from :])
        self._live_from = len(self.history.records)
        for rule in self.rules:
            if rule.name in self.fired:
                continue
            try:
                found = rule.findings(new_records if rule.per_record else self.history)
            except Exception:  # reported as status Error by the final evaluation; never kill the fit
                log.exception("Debugger rule %s failed", rule.name)
                continue
            if found:
                self.fired[rule.name] = found[0]
                log.warning(
                    "Debugger: %s IssuesFound at step %d: %s (action: %s)",
                    rule.name,
                    found[0].step,
                    found[0].message,
                    rule.action,
                )
                if rule.action == "stop" and stop is None:
                    stop = (rule, found[0])
        if len(self.fired) > fired_before and trainer.is_global_zero:
            self.write(html=False)  # the JSON shows the live status, as SageMaker's rule status does
        should_stop = trainer.strategy.reduce_boolean_decision(stop is not None, all=False)
        if should_stop and self.stopped is None:
            rule_name, step = (
                (stop[0].name, trainer.global_step) if stop else ("another rank's rule", trainer.global_step)
            )
            self.stopped = {"rule": rule_name, "step": step}
            log.warning("Debugger: stopping training at step %d (%s, action: stop)", step, rule_name)
            trainer.should_stop = True
            # SageMaker's StopTraining stops now; min_epochs/min_steps must not keep a broken run going.
            trainer.fit_loop.min_epochs = 0
            trainer.fit_loop.epoch_loop.min_steps = None

    def write(
        self, error: str | None = None, html: bool | None = None
    ) -> tuple[dict[str, Path], list[RuleResult]]:
        """Evaluate every rule over the whole history and write the reports; returns (paths, results)."""
        results, findings = run_debugger_rules(self.rules, self.history)
        smd = self.smdebug
        extra = {
            "stopped": self.stopped,
            "live": [{"rule": f.rule, "step": f.step, "message": f.message} for f in self.fired.values()],
            "save_interval": {"train": self.train_interval, "eval": self.eval_interval},
            "smdebug": {"out_dir": smd.out_dir, "sagemaker": smd.sagemaker}
            if smd is not None and smd.active
            else None,
            "error": error,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        subtitle = f"{self.output_dir.parent} · {self.history.last_step or 0} steps" + (
            f" · ended with {error}" if error else ""
        )
        html = self.html if html is None else html
        paths = write_report(
            self.output_dir,
            results,
            self.rules,
            findings,
            self.history,
            html=html,
            subtitle=subtitle,
            **extra,
        )
        return paths, results
