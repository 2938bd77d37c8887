"""Debugger rules on hand-built histories: each fires on its condition, stays quiet otherwise
(no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dogbreed.debug.builtin_rules import RULES, build_rules, run_debugger_rules
from dogbreed.debug.stats import (
    ActivationProbe,
    Columns,
    History,
    StepRecord,
    TensorStats,
    tensor_stats,
    trainable_relus,
)

# SageMaker's documented defaults ("List of Debugger built-in rules"); Overtraining.delta as in today's page.
SAGEMAKER_DEFAULTS = {
    "VanishingGradient": {"threshold": 1e-7},
    "ExplodingTensor": {"only_nan": False},
    "PoorWeightInitialization": {
        "activation_inputs_regex": ".*relu_input",
        "threshold": 10.0,
        "distribution_range": 0.001,
        "patience": 5,
        "steps": 10,
    },
    "LossNotDecreasing": {
        "num_steps": 10,
        "diff_percent": 0.1,
        "increase_threshold_percent": 5.0,
        "mode": None,
    },
    "Overfit": {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
    "Overtraining": {"patience_train": 5, "patience_validation": 10, "delta": 0.01},
    "WeightUpdateRatio": {"large_threshold": 10.0, "small_threshold": 1e-8, "epsilon": 1e-9},
    "DeadRelu": {"threshold_inactivity": 1.0, "threshold_layer": 50.0},
}


def stats(mean_abs: float = 1e-2, norm: float = 1.0) -> TensorStats:
    return TensorStats(norm=norm, mean_abs=mean_abs, zero_frac=0.0)


def cols(**layers: TensorStats) -> Columns:
    return Columns.from_rows(layers)


def updates(**layers: tuple[float, float]) -> Columns:
    return Columns.from_rows(layers, ("update_norm", "weight_norm"))


def rule(name: str, **params):
    return RULES[name](**params)


def steps_of(findings) -> list[int]:
    return [f.step for f in findings]


def test_defaults_are_sagemakers_and_the_yaml_repeats_them() -> None:
    from dogbreed.config import compose

    assert {name: cls.defaults for name, cls in RULES.items()} == SAGEMAKER_DEFAULTS
    cfg = compose("train", ["data.root=/nonexistent"])
    yaml_rules = {k: dict(v) for k, v in cfg.callbacks.debugger.rules.items()}
    for name, params in yaml_rules.items():
        assert params.pop("action") == "warn"
        assert params == SAGEMAKER_DEFAULTS[name], name
    assert set(yaml_rules) == set(RULES)


def test_vanishing_gradient_fires_below_threshold_only() -> None:
    h = History(
        records=[
            StepRecord(0, gradients=cols(a=stats(1e-3), b=stats(1e-3))),
            StepRecord(10, gradients=cols(a=stats(1e-3), b=stats(5e-8))),
            StepRecord(20, gradients=cols(a=stats(float("nan")))),
        ]
    )
    found = rule("VanishingGradient").findings(h)
    assert steps_of(found) == [10]
    assert "b" in found[0].message and "1 of 2" in found[0].message
    assert rule("VanishingGradient", threshold=1e-2).findings(h)[0].step == 0


def test_exploding_tensor_nan_and_inf() -> None:
    h = History(
        train_loss=[(0, 2.0), (10, float("inf"))],
        records=[
            StepRecord(0, weights=cols(w=stats())),
            StepRecord(20, gradients=cols(g=stats(norm=float("nan")))),
        ],
    )
    assert steps_of(rule("ExplodingTensor").findings(h)) == [10, 20]
    only_nan = rule("ExplodingTensor", only_nan=True).findings(h)
    assert steps_of(only_nan) == [20] and "gradient g" in only_nan[0].message


def test_poor_weight_initialization_activation_variance_ratio() -> None:
    def rec(step: int, low: float) -> StepRecord:
        return StepRecord(step, act_var={"l1_relu_input": 1.0, "l2_relu_input": low, "other_output": 1e-9})

    r = rule("PoorWeightInitialization")
    assert r.findings(History(records=[rec(0, 0.2)])) == []  # 5x spread: fine
    assert steps_of(r.findings(History(records=[rec(0, 0.05), rec(12, 1e-6)]))) == [
        0
    ]  # 20x; step 12 >= steps
    assert (
        "constant"
        in r.findings(History(records=[StepRecord(0, act_var={"a_relu_input": 0.0, "b_relu_input": 0.0})]))[
            0
        ].message
    )


def test_poor_weight_initialization_narrow_gradients_need_a_stalled_loss() -> None:
    r = rule("PoorWeightInitialization", patience=3)
    learning = [StepRecord(s, grad_spread=1e-4, loss=2.0 - 0.1 * s) for s in range(10)]
    assert r.findings(History(records=learning)) == []
    stalled = [StepRecord(s, grad_spread=1e-4, loss=2.0) for s in range(10)]
    assert steps_of(r.findings(History(records=stalled)))[0] == 3
    wide = [StepRecord(s, grad_spread=0.5, loss=2.0) for s in range(10)]
    assert r.findings(History(records=wide)) == []


def test_loss_not_decreasing_compares_with_the_newest_step_num_steps_back() -> None:
    # SageMaker's example: loss saved every 3 steps, num_steps=10 → step 21 is compared with step 9,
    # next check 33.
    flat = [(s, 1.0) for s in range(9, 34, 3)]
    found = rule("LossNotDecreasing", mode="TRAIN").findings(History(train_loss=flat))
    assert steps_of(found) == [21, 33]
    assert "(step 9)" in found[0].message
    falling = [(s, 1.0 - 0.01 * s) for s in range(0, 60, 3)]
    assert rule("LossNotDecreasing", mode="TRAIN").findings(History(train_loss=falling)) == []


def test_loss_not_decreasing_diff_percent_increase_threshold_and_mode() -> None:
    slow = [(0, 1.0), (10, 0.9995), (20, 0.999)]  # 0.05% per check
    assert steps_of(rule("LossNotDecreasing").findings(History(val_loss=slow))) == [10, 20]
    assert rule("LossNotDecreasing", diff_percent=0.01).findings(History(val_loss=slow)) == []
    # a dip then a rise: 10% below the reference 10 steps back, but 80% above the minimum in between
    bumpy = [(0, 1.0), (5, 0.5), (10, 0.9)]
    found = rule("LossNotDecreasing").findings(History(val_loss=bumpy))
    assert steps_of(found) == [10] and "above its minimum" in found[0].message
    assert rule("LossNotDecreasing", increase_threshold_percent=100.0).findings(History(val_loss=bumpy)) == []
    # mode null: validation loss when the run validates, else train loss
    h = History(train_loss=[(0, 2.0), (10, 2.0)], val_loss=[(0, 1.0), (10, 0.5)])
    assert rule("LossNotDecreasing").findings(h) == []
    assert steps_of(rule("LossNotDecreasing", mode="TRAIN").findings(h)) == [10]
    h.val_loss, h.has_validation = [], False
    assert steps_of(rule("LossNotDecreasing").findings(h)) == [10]


def test_overfit_ratio_patience_and_start_step() -> None:
    h = History(
        train_loss=[(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)],
        val_loss=[(2, 1.05), (3, 1.2), (4, 1.3)],
    )
    assert steps_of(rule("Overfit").findings(h)) == [3, 4]
    assert steps_of(rule("Overfit", patience=2).findings(h)) == [4]
    assert steps_of(rule("Overfit", start_step=4).findings(h)) == [4]
    assert rule("Overfit", ratio_threshold=0.5).findings(h) == []


def test_overtraining_needs_validation_stuck_while_training_improves() -> None:
    val = [(s, 1.0) for s in range(1, 13)]
    improving = [(s, 1.0 - 0.05 * s) for s in range(1, 13)]
    found = rule("Overtraining").findings(History(train_loss=improving, val_loss=val))
    assert steps_of(found) == [11, 12]
    stuck = [(s, 1.0) for s in range(1, 13)]
    assert rule("Overtraining").findings(History(train_loss=stuck, val_loss=val)) == []
    assert (
        rule("Overtraining", delta=0.0).findings(
            History(train_loss=improving, val_loss=[(s, 1.0 - 0.001 * s) for s in range(1, 13)])
        )
        == []
    )


def test_weight_update_ratio_bounds() -> None:
    h = History(
        records=[
            StepRecord(0, updates=updates(w=(1e-3, 1.0), v=(2e-3, 1.0))),
            StepRecord(1, updates=updates(w=(0.0, 1.0), v=(2e-3, 1.0))),
            StepRecord(2, updates=updates(w=(50.0, 1.0), v=(float("nan"), 1.0))),
        ]
    )
    found = rule("WeightUpdateRatio").findings(h)
    assert steps_of(found) == [1, 2]
    assert "1 of 2 weight(s) changed by less than" in found[0].message and ": w" in found[0].message
    assert "1 weight(s) changed by more than 10x their norm: w" in found[1].message


def test_dead_relu_fraction_of_units() -> None:
    sixty_dead = np.array([0.0] * 6 + [40.0] * 4, dtype=np.float32)
    forty_dead = np.array([0.5] * 4 + [40.0] * 6, dtype=np.float32)
    h = History(
        records=[
            StepRecord(0, relu_activity={"a_relu_output": forty_dead}),
            StepRecord(1, relu_activity={"a_relu_output": sixty_dead}),
        ]
    )
    assert steps_of(rule("DeadRelu").findings(h)) == [1]
    assert steps_of(rule("DeadRelu", threshold_layer=30.0).findings(h)) == [0, 1]


def test_build_rules_validates_names_params_actions() -> None:
    rules = build_rules({"Overfit": {"action": "stop", "patience": 3}, "DeadRelu": None})
    assert [(r.name, r.action, r.patience) for r in rules] == [("Overfit", "stop", 3)]
    with pytest.raises(ValueError, match="unknown rule"):
        build_rules({"Vanishing": {}})
    with pytest.raises(ValueError, match=r"Overfit: unknown parameter 'patienc'; known: action, start_step"):
        build_rules({"Overfit": {"patienc": 3}})
    with pytest.raises(ValueError, match="warn or stop"):
        build_rules({"Overfit": {"action": "halt"}})
    with pytest.raises(ValueError, match="mode"):
        build_rules({"LossNotDecreasing": {"mode": "TEST"}})
    with pytest.raises(
        ValueError, match=r"rules.Overfit.ratio_threshold='high' must be float \(default 0.1\)"
    ):
        build_rules({"Overfit": {"ratio_threshold": "high"}})
    with pytest.raises(ValueError, match=r"rules.Overtraining.patience_train=2.5 must be int"):
        build_rules({"Overtraining": {"patience_train": 2.5}})
    assert build_rules({"Overfit": {"ratio_threshold": 1}})[0].ratio_threshold == 1.0


def test_run_debugger_rules_statuses_in_the_shared_shape() -> None:
    broken = RULES["Overfit"]()
    broken.findings = lambda history: 1 / 0  # type: ignore[method-assign]
    rules = [RULES["VanishingGradient"](), RULES["Overtraining"](), broken]
    results, findings = run_debugger_rules(
        rules, History(records=[StepRecord(3, gradients=cols(g=stats(0.0)))])
    )
    by_name = {r.name: r for r in results}
    assert by_name["VanishingGradient"].status == "IssuesFound" and by_name["VanishingGradient"].step == 3
    assert by_name["VanishingGradient"].recommendation
    assert by_name["Overtraining"].status == "NoIssuesFound" and by_name["Overtraining"].message.startswith(
        "not evaluated"
    )
    assert by_name["Overfit"].status == "Error" and "ZeroDivisionError" in by_name["Overfit"].message
    assert [f.rule for f in findings] == ["VanishingGradient"]


def test_tensor_stats_match_direct_computation() -> None:
    a = torch.tensor([[0.0, -3.0], [4.0, 0.0]])
    b = torch.tensor([float("nan"), 1.0])
    c = torch.tensor([float("inf"), 1.0])
    got = tensor_stats(["a", "b", "c"], [a, b, c])
    assert got.names == ("a", "b", "c")
    assert got["norm"][0] == pytest.approx(5.0) and got["mean_abs"][0] == pytest.approx(7 / 4)
    assert got["zero_frac"][0] == pytest.approx(0.5) and got["zero_frac"][1] == 0.0
    assert math.isnan(got["norm"][1]) and math.isnan(got["mean_abs"][1]) and math.isinf(got["norm"][2])
    assert got.pick(~np.isfinite(got["norm"])) == ["b", "c"]
    assert len(tensor_stats([], [])) == 0


def test_activation_probe_reads_inplace_relu_inputs_and_skips_frozen_parts() -> None:
    model = nn.Sequential()
    model.add_module("frozen", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    model.add_module("head", nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2)))
    model.frozen.requires_grad_(False)
    relus = trainable_relus(model)
    assert [n for n, _ in relus] == ["head.1"]
    probe = ActivationProbe(relus)
    probe.attach(inputs=True, outputs=True)
    x = torch.randn(64, 4)
    pre = model.head[0](model.frozen(x)).detach()
    model(x)
    variances, activity = probe.collect()
    assert variances["head.1_relu_input"] == pytest.approx(float(pre.var(unbiased=False)), rel=1e-5)
    assert activity["head.1_relu_output"].shape == (8,)
    assert np.allclose(activity["head.1_relu_output"], 100 * (pre > 0).float().mean(0).numpy())
    model(x)  # detached: nothing more is recorded
    assert probe.collect() == ({}, {})
