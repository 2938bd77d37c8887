"""Our own implementations of SageMaker Debugger's built-in rules (they only exist inside AWS containers).

Names, parameter names and defaults follow SageMaker's "List of Debugger built-in rules" (each rule's
dataclass fields, typed and checked by :class:`dogbreed.rules.Rule`). Each rule is a pure function of a
:class:`~dogbreed.debug.stats.History`: it returns every step at which its condition held, so the live
callback, the end-of-training report and ``analyze`` agree by construction.

Units: a train "step" is an optimizer step. LossNotDecreasing/Overfit/Overtraining read loss *points*:
train points (mean loss since the previous point, taken every ``train.save_interval`` steps and before
each validation) and validation points (the mean loss of one validation run). Overtraining's patience
counts points, so ``patience_validation: 10`` means ten validation runs without improvement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dogbreed import rules as base
from dogbreed.debug.stats import History, finite
from dogbreed.rules import SETTING, Rule, RuleResult

__all__ = ["RULES", "DebuggerRule", "Finding", "build_rules", "run_debugger_rules"]

ACTIONS = ("warn", "stop")


@dataclass(frozen=True)
class Finding:
    """The rule's condition held at ``step`` (its first finding is the step SageMaker would report)."""

    rule: str
    step: int
    message: str


@dataclass
class DebuggerRule(Rule):
    """A Debugger rule: ``findings`` over a History; ``action`` is warn (log) or stop (end the fit, like
    SageMaker's StopTraining action)."""

    config_key = "callbacks.debugger.rules"
    # Findings at a step depend only on that step's record: live, only new records need a look.
    per_record: ClassVar[bool] = False
    action: str = field(default="warn", metadata=SETTING)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action not in ACTIONS:
            raise ValueError(f"{self.key('action')}={self.action!r}: use warn or stop")

    def findings(self, history: History) -> list[Finding]:
        raise NotImplementedError

    def missing(self, history: History) -> str | None:
        """Why the rule could not look at anything yet (None when it had data)."""
        return None

    def result(self, found: list[Finding], history: History) -> RuleResult:
        """The shared result: the first finding (SageMaker reports that step), or why there was none."""
        if found:
            first = found[0]
            extra = (
                f" (condition held at {len(found)} evaluations, steps {first.step}–{found[-1].step})"
                if len(found) > 1
                else ""
            )
            return self.outcome(True, first.message + extra, step=first.step)
        why = self.missing(history)
        return self.outcome(False, f"not evaluated: {why}" if why else "no issues found")

    def _finding(self, step: int, message: str) -> Finding:
        return Finding(self.name, int(step), message)


def names_preview(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


@dataclass
class VanishingGradient(DebuggerRule):
    name = "VanishingGradient"
    per_record = True
    threshold: float = 1e-7
    recommendation = (
        "Gradients that small stop learning: check for zero/too-small initialisation, saturated or dead "
        "activations, a detached graph, or use residual connections/normalisation and a suitable init."
    )

    def findings(self, history: History) -> list[Finding]:
        out, threshold = [], self.threshold
        for rec in history.records:
            small = rec.gradients.pick(rec.gradients["mean_abs"] < threshold)  # NaN compares False
            if small:
                out.append(
                    self._finding(
                        rec.step,
                        f"{len(small)} of {len(rec.gradients)} gradient tensors have mean |g| < "
                        f"{threshold:g}: {names_preview(small)}",
                    )
                )
        return out

    def missing(self, history: History) -> str | None:
        return None if any(r.gradients for r in history.records) else "no gradients were recorded"


@dataclass
class ExplodingTensor(DebuggerRule):
    name = "ExplodingTensor"
    per_record = True
    only_nan: bool = False
    recommendation = (
        "Non-finite values: lower the learning rate, clip gradients (trainer.gradient_clip_val), check the "
        "input normalisation and the loss for log(0)/division by zero, or use bf16 instead of fp16."
    )

    def findings(self, history: History) -> list[Finding]:
        bad_value = np.isnan if self.only_nan else (lambda v: ~np.isfinite(v))
        bad: dict[int, list[str]] = {}
        for label, series in (("train loss", history.train_loss), ("validation loss", history.val_loss)):
            for step, value in series:
                if bad_value(value):
                    bad.setdefault(step, []).append(label)
        for rec in history.records:
            for kind, stats in (("gradient", rec.gradients), ("weight", rec.weights)):
                names = [f"{kind} {n}" for n in stats.pick(bad_value(stats["norm"]))]
                if names:
                    bad.setdefault(rec.step, []).extend(names)
        what = "NaN" if self.only_nan else "NaN/inf"
        return [
            self._finding(step, f"{what} in {names_preview(names)}") for step, names in sorted(bad.items())
        ]

    def missing(self, history: History) -> str | None:
        return None if history.train_loss or history.records else "no losses or tensors were recorded"


@dataclass
class PoorWeightInitialization(DebuggerRule):
    name = "PoorWeightInitialization"
    activation_inputs_regex: str = ".*relu_input"
    threshold: float = 10.0
    distribution_range: float = 0.001
    patience: int = 5
    steps: int = 10
    recommendation = (
        "Use an initialisation that keeps activation variance constant across layers (Kaiming for ReLU, "
        "Xavier for tanh/sigmoid), or add normalisation layers; avoid constant or tiny initial weights."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self._regex = re.compile(self.activation_inputs_regex)
        except re.error as exc:
            raise ValueError(
                f"{self.key('activation_inputs_regex')}={self.activation_inputs_regex!r}: {exc}"
            ) from None

    def _loss_stall(self, history: History) -> int | None:
        """First step at which the per-step loss had not beaten its best for ``patience`` steps
        (first steps)."""
        best, since = math.inf, 0
        for rec in history.records:
            if rec.step >= self.steps or not finite(rec.loss):
                continue
            if rec.loss < best:
                best, since = rec.loss, 0
            else:
                since += 1
                if since >= self.patience:
                    return rec.step
        return None

    def findings(self, history: History) -> list[Finding]:
        """(a) activation-input variance differs > ``threshold``x across layers, or (b) the gradients' 5-95
        percentile spread is below ``distribution_range`` while the loss has stalled for ``patience``
        steps."""
        regex = self._regex
        stall = self._loss_stall(history)
        out = []
        for rec in history.records:
            if rec.step >= self.steps:
                continue
            reasons = []
            variances = {n: v for n, v in rec.act_var.items() if regex.match(n) and finite(v)}
            if len(variances) >= 2:
                low, high = min(variances.values()), max(variances.values())
                if high <= 0:
                    reasons.append(f"all {len(variances)} activation inputs are constant (variance 0)")
                elif low <= 0 or high / low > self.threshold:
                    ratio = math.inf if low <= 0 else high / low
                    reasons.append(
                        f"activation-input variance varies {ratio:.3g}x across {len(variances)} layers "
                        f"(> threshold {self.threshold:g}; {min(variances, key=variances.get)} {low:.3g} vs "
                        f"{max(variances, key=variances.get)} {high:.3g})"
                    )
            narrow = finite(rec.grad_spread) and rec.grad_spread < self.distribution_range
            if narrow and stall is not None and rec.step >= stall:
                reasons.append(
                    f"gradients' 5-95 percentile spread {rec.grad_spread:.3g} < distribution_range "
                    f"{self.distribution_range:g} and the loss has not improved for {self.patience} steps "
                    f"(since step {stall})"
                )
            if reasons:
                out.append(self._finding(rec.step, "; ".join(reasons)))
        return out

    def missing(self, history: History) -> str | None:
        early = [r for r in history.records if r.step < self.steps]
        return None if early else f"no step below steps={self.steps} was recorded"


@dataclass
class LossNotDecreasing(DebuggerRule):
    name = "LossNotDecreasing"
    recommendation = (
        "Check the learning rate (zero or too small stalls, too large oscillates), that the labels match "
        "the inputs, and that the parameters you mean to train are not frozen. At convergence, stop."
    )
    MODES: ClassVar[dict[str, str]] = {"EVAL": "validation", "TRAIN": "train", "GLOBAL": "train"}
    num_steps: int = 10
    diff_percent: float = 0.1
    increase_threshold_percent: float = 5.0
    mode: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode is not None and self.mode.upper() not in self.MODES:
            raise ValueError(f"{self.key('mode')}={self.mode!r}: use EVAL, TRAIN, GLOBAL or null")

    def _series(self, history: History) -> tuple[str, list[tuple[int, float]]]:
        """mode null: validation loss when the run validates, else train loss (SageMaker: EVAL,
        then TRAIN)."""
        mode = None if self.mode is None else self.MODES[self.mode.upper()]
        if mode is None:
            validates = (
                history.has_validation if history.has_validation is not None else bool(history.val_loss)
            )
            mode = "validation" if validates else "train"
        return mode, history.val_loss if mode == "validation" else history.train_loss

    def _check(self, label: str, series: list[tuple[int, float]]) -> list[Finding]:
        out, last_check, best = [], None, math.inf
        for i, (step, value) in enumerate(series):
            if finite(value):
                best = min(best, value)
            if last_check is not None and step - last_check < self.num_steps:
                continue
            ref = next((p for p in reversed(series[:i]) if p[0] <= step - self.num_steps), None)
            if ref is None:
                continue
            last_check = step
            ref_step, ref_value = ref
            if not (finite(value) and finite(ref_value)) or ref_value == 0:
                continue
            change = 100.0 * (value - ref_value) / abs(ref_value)
            rise = 100.0 * (value - best) / abs(best) if best not in (0.0, math.inf) else 0.0
            if -change < self.diff_percent:
                out.append(
                    self._finding(
                        step,
                        f"{label} loss went from {ref_value:.4g} (step {ref_step}) to {value:.4g} (step "
                        f"{step}), {change:+.3g}%: it should drop by at least diff_percent "
                        f"{self.diff_percent:g}%",
                    )
                )
            elif rise > self.increase_threshold_percent:
                out.append(
                    self._finding(
                        step,
                        f"{label} loss {value:.4g} is {rise:.3g}% above its minimum {best:.4g} (> "
                        f"increase_threshold_percent {self.increase_threshold_percent:g}%)",
                    )
                )
        return out

    def findings(self, history: History) -> list[Finding]:
        return self._check(*self._series(history))

    def missing(self, history: History) -> str | None:
        label, series = self._series(history)
        if len(series) >= 2 and series[-1][0] - series[0][0] >= self.num_steps:
            return None
        return f"fewer than num_steps={self.num_steps} steps of {label} loss were recorded"


@dataclass
class Overfit(DebuggerRule):
    name = "Overfit"
    start_step: int = 0
    patience: int = 1
    ratio_threshold: float = 0.1
    recommendation = (
        "Validation loss is well above training loss: regularise (dropout, weight decay, augmentation), "
        "get more data, use a smaller model, or stop earlier (callbacks.early_stopping)."
    )

    def findings(self, history: History) -> list[Finding]:
        out, streak, prev_val_step = [], 0, -1
        for step, val in history.val_loss:
            window = [v for s, v in history.train_loss if prev_val_step < s <= step and finite(v)]
            if not window:
                window = [v for s, v in history.train_loss if s <= step and finite(v)][-1:]
            prev_val_step = step
            if step < self.start_step or not window or not finite(val):
                continue
            train = float(np.mean(window))
            if train <= 0:
                continue
            ratio = (val - train) / train
            streak = streak + 1 if ratio > self.ratio_threshold else 0
            if streak >= self.patience:
                out.append(
                    self._finding(
                        step,
                        f"validation loss {val:.4g} vs training loss {train:.4g}: (val - train) / train = "
                        f"{ratio:.3g} > ratio_threshold {self.ratio_threshold:g} for {streak} validation(s)",
                    )
                )
        return out

    def missing(self, history: History) -> str | None:
        if not history.val_loss:
            return "no validation loss was recorded (is there a validation set, and is val_loss logged?)"
        return None if history.train_loss else "no training loss was recorded"


@dataclass
class Overtraining(DebuggerRule):
    name = "Overtraining"
    patience_train: int = 5
    patience_validation: int = 10
    delta: float = 0.01
    recommendation = (
        "Training loss still improves while validation loss has stopped improving: stop earlier "
        "(callbacks.early_stopping), keep the best checkpoint, or regularise."
    )

    def findings(self, history: History) -> list[Finding]:
        events = sorted([(s, 0, v) for s, v in history.train_loss] + [(s, 1, v) for s, v in history.val_loss])
        best = [math.inf, math.inf]
        since = [0, 0]
        best_val_step = None
        out = []
        for step, kind, value in events:
            if not finite(value):
                continue
            if best[kind] == math.inf or best[kind] - value > self.delta:
                best[kind], since[kind] = value, 0
                best_val_step = step if kind == 1 else best_val_step
            else:
                since[kind] += 1
            if kind == 1 and since[1] >= self.patience_validation and since[0] < self.patience_train:
                out.append(
                    self._finding(
                        step,
                        f"validation loss has not improved by delta {self.delta:g} for {since[1]} "
                        f"validations (best {best[1]:.4g} at step {best_val_step}) while training loss keeps "
                        f"improving ({value:.4g} now vs train {best[0]:.4g})",
                    )
                )
        return out

    def missing(self, history: History) -> str | None:
        if len(history.val_loss) <= self.patience_validation:
            return (
                f"needs more than patience_validation={self.patience_validation} validation runs, got "
                f"{len(history.val_loss)}"
            )
        return None


@dataclass
class WeightUpdateRatio(DebuggerRule):
    name = "WeightUpdateRatio"
    per_record = True
    large_threshold: float = 10.0
    small_threshold: float = 1e-8
    epsilon: float = 1e-9
    recommendation = (
        "Updates should be a small fraction of the weights (~1e-3): raise a too-small/zero learning rate, "
        "lower a too-large one, and check the optimizer actually holds these parameters."
    )

    def findings(self, history: History) -> list[Finding]:
        out = []
        for rec in history.records:
            if not rec.updates:
                continue
            with np.errstate(invalid="ignore"):
                ratios = rec.updates["update_norm"] / (rec.updates["weight_norm"] + self.epsilon)
            large = rec.updates.pick(ratios > self.large_threshold)  # NaN (exploded) compares False
            small = rec.updates.pick(ratios < self.small_threshold)
            parts = []
            if large:
                parts.append(
                    f"{len(large)} weight(s) changed by more than {self.large_threshold:g}x their norm: "
                    f"{names_preview(large)}"
                )
            if small:
                parts.append(
                    f"{len(small)} of {len(rec.updates)} weight(s) changed by less than "
                    f"{self.small_threshold:g} of their norm: {names_preview(small)}"
                )
            if parts:
                out.append(self._finding(rec.step, "; ".join(parts)))
        return out

    def missing(self, history: History) -> str | None:
        return None if any(r.updates for r in history.records) else "no weight updates were recorded"


@dataclass
class DeadRelu(DebuggerRule):
    name = "DeadRelu"
    per_record = True
    threshold_inactivity: float = 1.0
    threshold_layer: float = 50.0
    recommendation = (
        "Many ReLUs never fire: lower the learning rate, use Kaiming init, LeakyReLU/GELU, or "
        "normalisation before the activation."
    )

    def findings(self, history: History) -> list[Finding]:
        out = []
        for rec in history.records:
            dead = {}
            for name, activity in rec.relu_activity.items():
                pct = (
                    100.0 * float(np.mean(np.asarray(activity) < self.threshold_inactivity))
                    if np.size(activity)
                    else 0.0
                )
                if pct > self.threshold_layer:
                    dead[name] = pct
            if dead:
                worst = max(dead, key=dead.get)
                out.append(
                    self._finding(
                        rec.step,
                        f"{len(dead)} layer(s) have more than {self.threshold_layer:g}% dead units (active < "
                        f"{self.threshold_inactivity:g}% of the time); worst {worst}: {dead[worst]:.0f}%",
                    )
                )
        return out

    def missing(self, history: History) -> str | None:
        return (
            None
            if any(r.relu_activity for r in history.records)
            else "no ReLU/ReLU6 module in a trainable part of the model"
        )


RULES: dict[str, type[DebuggerRule]] = {
    cls.name: cls
    for cls in (
        VanishingGradient,
        ExplodingTensor,
        PoorWeightInitialization,
        LossNotDecreasing,
        Overfit,
        Overtraining,
        WeightUpdateRatio,
        DeadRelu,
    )
}


def build_rules(config: Mapping[str, Mapping[str, Any] | None] | None = None) -> list[DebuggerRule]:
    """Rules from ``{name: {action, **params} | None}``: the listed ones run, null switches one off;
    None = every rule with its defaults."""
    return base.build_rules(RULES, config, unlisted="off")


def run_debugger_rules(rules: list[DebuggerRule], history: History) -> tuple[list[RuleResult], list[Finding]]:
    """Run every rule over the whole history: one result per rule in the shared shape, plus all findings."""
    findings: list[Finding] = []

    def check(rule: DebuggerRule) -> RuleResult:
        found = rule.findings(history)
        findings.extend(found)
        return rule.result(found, history)

    return base.run_rules(rules, check), sorted(findings, key=lambda f: (f.step, f.rule))
