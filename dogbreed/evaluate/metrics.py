"""Everything the report says, computed from (probabilities, targets): torchmetrics where it fits.

- Accuracy, per-class precision/recall/F1 and their macro/weighted averages, and the confusion matrix
  come from ``torchmetrics.functional``. Macro averages skip classes absent from both the targets and the
  predictions (torchmetrics' rule); weighted averages weight by support.
- Calibration is binned here rather than by torchmetrics because the reliability diagram must show the
  very bins the ECE is summed over, and torchmetrics puts confidence == 1.0 in a bin of its own. The bins
  are ``[i/n, (i+1)/n)``, the last one closed; otherwise the two ECEs are identical (tests check).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


@dataclass
class Metrics:
    """The numbers behind ``evaluation.json`` (``to_dict``) and the plots."""

    class_names: list[str]
    num_images: int
    top1: float
    top5: float
    top_k: int  # k used for "top5": min(5, classes)
    loss: float
    macro: dict[str, float]
    weighted: dict[str, float]
    per_class: list[dict]
    confusion: torch.Tensor  # (C, C) int64, rows = true class, columns = predicted class
    most_confused: list[dict]
    top_losses: list[dict]
    calibration: dict

    @property
    def errors(self) -> int:
        return int(self.num_images - self.confusion.diagonal().sum())

    def to_dict(self) -> dict:
        return {
            "num_images": self.num_images,
            "num_classes": len(self.class_names),
            "errors": self.errors,
            "top1": self.top1,
            "top5": self.top5,
            "top_k": self.top_k,
            "loss": self.loss,
            "ece": self.calibration["ece"],
            "macro": self.macro,
            "weighted": self.weighted,
            "per_class": self.per_class,
            "most_confused": self.most_confused,
            "top_losses": self.top_losses,
            "calibration": self.calibration,
        }


def calibration(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict:
    """Reliability bins (count, mean confidence, accuracy) and the expected calibration error."""
    if n_bins < 1:
        raise ValueError(f"evaluate.calibration_bins={n_bins} must be >= 1")
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf.double())
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    safe = count.clamp(min=1)
    mean_conf, acc = conf_sum / safe, acc_sum / safe
    ece = float(((acc - mean_conf).abs() * count).sum() / max(1, len(targets)))
    bins = [
        {
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "count": int(count[i]),
            "confidence": float(mean_conf[i]) if count[i] else None,
            "accuracy": float(acc[i]) if count[i] else None,
        }
        for i in range(n_bins)
    ]
    return {"ece": ece, "n_bins": n_bins, "mean_confidence": float(conf.double().mean()), "bins": bins}


def confused_pairs(confusion: torch.Tensor, class_names: list[str], n: int = 10) -> list[dict]:
    """The ``n`` class pairs mixed up most often, both directions summed.

    ``a`` is the class mistaken for the other more often; ``share`` is the pair's errors over the
    pair's images.
    """
    cm = confusion.long()
    support = cm.sum(dim=1)
    pairs = []
    for i in range(cm.shape[0]):
        for j in range(i + 1, cm.shape[0]):
            ij, ji = int(cm[i, j]), int(cm[j, i])
            if ij + ji == 0:
                continue
            a, b = (i, j) if ij >= ji else (j, i)
            total = ij + ji
            images = int(support[i] + support[j])
            pairs.append(
                {
                    "a": class_names[a],
                    "b": class_names[b],
                    "a_as_b": max(ij, ji),
                    "b_as_a": min(ij, ji),
                    "count": total,
                    "share": total / images if images else 0.0,
                }
            )
    pairs.sort(key=lambda p: (-p["count"], -p["a_as_b"], -p["share"], p["a"], p["b"]))
    return pairs[:n]


def block_classes(
    confusion: torch.Tensor, pairs: list[dict], class_names: list[str], k: int = 20
) -> list[int]:
    """At most ``k`` class indices for a readable confusion-matrix image.

    All classes when they fit; otherwise the classes of the most-confused pairs (in pair order, so partners
    sit side by side), topped up with the classes that have the most errors.
    """
    n = len(class_names)
    if n <= k:
        return list(range(n))
    index = {name: i for i, name in enumerate(class_names)}
    chosen: list[int] = []
    for pair in confused_pairs(confusion, class_names, n=k * k):
        for name in (pair["a"], pair["b"]):
            if index[name] not in chosen and len(chosen) < k:
                chosen.append(index[name])
    off = confusion.sum(dim=0) + confusion.sum(dim=1) - 2 * confusion.diagonal()
    for i in torch.argsort(off, descending=True, stable=True).tolist():
        if len(chosen) >= k:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen


def top_losses(
    probs: torch.Tensor, targets: torch.Tensor, paths: list[str], class_names: list[str], n: int = 16
) -> list[dict]:
    """The ``n`` images with the highest cross-entropy, worst first (fastai's ``plot_top_losses``)."""
    p_true = probs.gather(1, targets.view(-1, 1)).squeeze(1)
    losses = -torch.log(p_true.clamp_min(1e-12))
    order = sorted(range(len(losses)), key=lambda i: (-float(losses[i]), i))[:n]
    conf, pred = probs.max(dim=1)
    return [
        {
            "path": paths[i],
            "true": class_names[int(targets[i])],
            "predicted": class_names[int(pred[i])],
            "p_predicted": float(conf[i]),
            "p_true": float(p_true[i]),
            "loss": float(losses[i]),
        }
        for i in order
    ]


def _per_class(confusion: torch.Tensor, precision, recall, f1, class_names: list[str]) -> list[dict]:
    off = confusion.clone()
    off.fill_diagonal_(0)
    rows = []
    for i, name in enumerate(class_names):
        worst = int(off[i].argmax()) if off[i].sum() else None
        rows.append(
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(confusion[i].sum()),
                "predicted": int(confusion[:, i].sum()),
                "confused_with": class_names[worst] if worst is not None else None,
                "confused_count": int(off[i, worst]) if worst is not None else 0,
            }
        )
    return rows


def compute(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: list[str],
    paths: list[str] | None = None,
    most_confused: int = 10,
    num_top_losses: int = 16,
    n_bins: int = 15,
) -> Metrics:
    """All metrics for ``probs`` (N, C) against ``targets`` (N,)."""
    probs, targets = probs.float().cpu(), targets.long().cpu()
    n, c = probs.shape
    if n == 0 or c != len(class_names) or targets.shape != (n,):
        raise ValueError(
            f"need probs (N, {len(class_names)}) and targets (N,) with N > 0, got {tuple(probs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    k = min(5, c)
    kw = {"num_classes": c}
    scores = {
        name: {avg: fn(probs, targets, average=avg, **kw) for avg in ("none", "macro", "weighted")}
        for name, fn in (
            ("precision", multiclass_precision),
            ("recall", multiclass_recall),
            ("f1", multiclass_f1_score),
        )
    }
    confusion = multiclass_confusion_matrix(probs, targets, **kw).long()
    p_true = probs.gather(1, targets.view(-1, 1)).squeeze(1)
    return Metrics(
        class_names=list(class_names),
        num_images=n,
        top1=float(multiclass_accuracy(probs, targets, average="micro", **kw)),
        top5=float(multiclass_accuracy(probs, targets, average="micro", top_k=k, **kw)),
        top_k=k,
        loss=float(-torch.log(p_true.clamp_min(1e-12)).mean()),
        macro={name: float(s["macro"]) for name, s in scores.items()},
        weighted={name: float(s["weighted"]) for name, s in scores.items()},
        per_class=_per_class(
            confusion, *(scores[m]["none"] for m in ("precision", "recall", "f1")), class_names
        ),
        confusion=confusion,
        most_confused=confused_pairs(confusion, class_names, most_confused),
        top_losses=top_losses(probs, targets, paths or [""] * n, class_names, num_top_losses),
        calibration=calibration(probs, targets, n_bins),
    )
