"""dogbreed.evaluate.metrics against direct computations (plain Python loops, no numpy/sklearn)."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from dogbreed.evaluate import EvalSettings, settings_from
from dogbreed.evaluate.metrics import block_classes, calibration, compute, confused_pairs

NAMES = [f"{i + 1:03d}.Class_{chr(65 + i)}" for i in range(7)]


def _random_case(n: int = 120, c: int = 7, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, c - 1, (n,), generator=g)  # the last class never occurs as a target
    logits = torch.randn(n, c, generator=g) * 1.5
    logits[torch.arange(n), targets] += 1.2
    return torch.softmax(logits, dim=1), targets


def _direct(probs: torch.Tensor, targets: torch.Tensor, c: int) -> dict:
    rows, y = probs.tolist(), targets.tolist()
    preds = [max(range(c), key=lambda j, r=r: r[j]) for r in rows]
    cm = [[0] * c for _ in range(c)]
    for t, p in zip(y, preds, strict=True):
        cm[t][p] += 1
    n = len(y)
    top5 = sum(1 for r, t in zip(rows, y, strict=True) if sum(1 for v in r if v > r[t]) < 5) / n
    per = []
    for k in range(c):
        tp = cm[k][k]
        fp = sum(cm[t][k] for t in range(c)) - tp
        fn = sum(cm[k]) - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per.append({"p": prec, "r": rec, "f1": f1, "support": tp + fn, "present": tp + fp + fn > 0})
    present = [m for m in per if m["present"]]
    macro = {k: sum(m[k] for m in present) / len(present) for k in ("p", "r", "f1")}
    weighted = {k: sum(m[k] * m["support"] for m in per) / n for k in ("p", "r", "f1")}
    loss = -sum(math.log(r[t]) for r, t in zip(rows, y, strict=True)) / n
    return {
        "cm": cm,
        "top1": sum(cm[k][k] for k in range(c)) / n,
        "top5": top5,
        "per": per,
        "macro": macro,
        "weighted": weighted,
        "loss": loss,
    }


def test_metrics_agree_with_a_direct_computation() -> None:
    probs, targets = _random_case()
    m = compute(probs, targets, NAMES, [f"img{i}.jpg" for i in range(len(targets))])
    d = _direct(probs, targets, len(NAMES))
    assert m.confusion.tolist() == d["cm"]
    assert m.top1 == pytest.approx(d["top1"], abs=1e-6)
    assert m.top5 == pytest.approx(d["top5"], abs=1e-6) and m.top_k == 5
    assert 0.2 < m.top1 < m.top5 < 1.0  # a case where top-1 and top-5 differ
    assert m.loss == pytest.approx(d["loss"], rel=1e-5)
    for row, ref in zip(m.per_class, d["per"], strict=True):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (ref["p"], ref["r"], ref["f1"]), abs=1e-6
        )
        assert row["support"] == ref["support"]
    assert m.per_class[-1]["support"] == 0
    assert [m.macro[k] for k in ("precision", "recall", "f1")] == pytest.approx(
        [d["macro"][k] for k in ("p", "r", "f1")], abs=1e-6
    )
    assert [m.weighted[k] for k in ("precision", "recall", "f1")] == pytest.approx(
        [d["weighted"][k] for k in ("p", "r", "f1")], abs=1e-6
    )
    assert m.errors == len(targets) - sum(d["cm"][k][k] for k in range(len(NAMES)))
    for row in m.per_class:  # the most frequent wrong prediction per true class
        k = NAMES.index(row["class"])
        off = [d["cm"][k][j] if j != k else -1 for j in range(len(NAMES))]
        assert row["confused_count"] == (max(off) if max(off) > 0 else 0)
        assert row["predicted"] == sum(d["cm"][t][k] for t in range(len(NAMES)))


def test_calibration_bins_and_ece_match_direct_binning_and_torchmetrics() -> None:
    probs, targets = _random_case(n=200, seed=5)
    cal = calibration(probs, targets, n_bins=10)
    conf = probs.max(dim=1).values.tolist()
    pred = probs.argmax(dim=1).tolist()
    y = targets.tolist()
    ece = 0.0
    for i, b in enumerate(cal["bins"]):
        members = [k for k, c in enumerate(conf) if i / 10 <= c < (i + 1) / 10 or (i == 9 and c == 1.0)]
        assert b["count"] == len(members)
        if members:
            acc = sum(pred[k] == y[k] for k in members) / len(members)
            mean_conf = sum(conf[k] for k in members) / len(members)
            assert (b["accuracy"], b["confidence"]) == pytest.approx((acc, mean_conf), abs=1e-6)
            ece += len(members) / len(y) * abs(acc - mean_conf)
        else:
            assert b["accuracy"] is None and b["confidence"] is None
    assert cal["ece"] == pytest.approx(ece, abs=1e-6)
    assert max(conf) < 1.0
    assert cal["ece"] == pytest.approx(
        float(multiclass_calibration_error(probs, targets, num_classes=7, n_bins=10)), abs=1e-5
    )


def test_ece_of_an_overconfident_model() -> None:
    # 10 images, always 0.9 confident, right half the time: ECE = |0.5 - 0.9| = 0.4.
    probs = torch.tensor([[0.9, 0.1]] * 10)
    targets = torch.tensor([0, 1] * 5)
    cal = calibration(probs, targets, n_bins=5)
    assert cal["ece"] == pytest.approx(0.4, abs=1e-6)
    assert [b["count"] for b in cal["bins"]] == [0, 0, 0, 0, 10]  # 0.9 lies in the closed last bin [0.8, 1.0]


def test_confused_pairs_add_both_directions_and_sort_by_errors() -> None:
    cm = torch.tensor(
        [
            [8, 1, 0, 1],
            [3, 6, 0, 1],
            [0, 0, 9, 1],
            [0, 0, 4, 6],
        ]
    )
    names = ["a", "b", "c", "d"]
    pairs = confused_pairs(cm, names, n=10)
    assert [(p["a"], p["b"], p["a_as_b"], p["b_as_a"], p["count"]) for p in pairs] == [
        ("d", "c", 4, 1, 5),
        ("b", "a", 3, 1, 4),
        ("a", "d", 1, 0, 1),
        ("b", "d", 1, 0, 1),
    ]
    assert pairs[0]["share"] == pytest.approx(5 / 20)
    assert len(confused_pairs(cm, names, n=2)) == 2


def test_confusion_block_keeps_partners_together_and_stays_small() -> None:
    n = 40
    cm = torch.diag(torch.full((n,), 10))
    for a, b, k in ((30, 31, 6), (5, 17, 4), (12, 2, 3)):
        cm[a, b] = k
    names = [f"c{i}" for i in range(n)]
    chosen = block_classes(cm, confused_pairs(cm, names), names, k=8)
    assert chosen[:6] == [30, 31, 5, 17, 12, 2]
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert block_classes(cm[:5, :5], [], names[:5], k=8) == [0, 1, 2, 3, 4]


def test_top_losses_are_worst_first() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.95, 0.05], [0.5, 0.5]])
    targets = torch.tensor([0, 0, 1, 1])
    m = compute(probs, targets, ["x", "y"], ["p0", "p1", "p2", "p3"], num_top_losses=3)
    assert [t["path"] for t in m.top_losses] == ["p2", "p1", "p3"]
    first = m.top_losses[0]
    assert (first["true"], first["predicted"]) == ("y", "x")
    assert (first["p_true"], first["p_predicted"], first["loss"]) == pytest.approx(
        (0.05, 0.95, -math.log(0.05)), rel=1e-5
    )
    assert m.top_k == 2  # top-5 accuracy degrades to top-2 with two classes


def test_settings_reject_bad_values_naming_the_key() -> None:
    assert EvalSettings(split="val").report_name == "evaluation_valid"
    assert EvalSettings().report_name == "evaluation"
    with pytest.raises(ValueError, match="evaluate.top_losses=0"):
        settings_from({"_target_": "dogbreed.evaluate.EvalSettings", "top_losses": 0})
    with pytest.raises(ValueError, match="split='holdout'"):
        EvalSettings(split="holdout")
    with pytest.raises(ValueError, match=r"need probs \(N, 2\)"):
        compute(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ["x", "y"])
