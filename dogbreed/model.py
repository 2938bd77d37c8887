"""BreedClassifier: a pretrained torchvision ``backbone`` plus a new ``head``, as a LightningModule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dogbreed.backbones import Preprocess, build_backbone, preprocess_for
from dogbreed.config import at_least, freeze_policy

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
SCHEDULERS = ("none", "cosine", "onecycle")


def build_head(
    in_features: int, num_classes: int, type: str = "linear", hidden_dim: int = 512, dropout: float = 0.0
) -> nn.Module:
    """Linear classifier, or a one-hidden-layer MLP with dropout."""
    if type == "linear":
        return (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
            if dropout
            else nn.Linear(in_features, num_classes)
        )
    if type == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )
    raise ValueError(f"model.head.type={type!r}: use linear or mlp")


class GradualUnfreeze(BackboneFinetuning):
    """``freeze=gradual``: Lightning's ``BackboneFinetuning``, except that the head-only epochs freeze the
    backbone's BatchNorm as well (``train_bn=False``), so it follows the module's one BatchNorm rule; from the
    unfreeze epoch on BatchNorm trains with the rest of the backbone."""

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)
        pl_module.backbone.eval()  # the Trainer may have called train() before this hook

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Any) -> None:
        super().finetune_function(pl_module, epoch, optimizer)
        if epoch == self.unfreeze_backbone_at_epoch:
            pl_module.backbone.train(pl_module.training)


class BreedClassifier(pl.LightningModule):
    """Fine-tunes ``backbone`` (torchvision, classifier removed) with a new ``head``.

    ``freeze``: ``frozen`` trains only the head; ``full`` trains everything; ``gradual`` trains the head first
    and unfreezes the backbone at ``unfreeze_at_epoch`` with LR × ``backbone_lr_ratio``
    (:class:`GradualUnfreeze`,
    which the module brings itself through ``configure_callbacks``, under any Trainer). One BatchNorm rule
    for all three: a frozen backbone's BatchNorm is frozen too and stays in eval mode (see :meth:`train`).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: str = "resnet50",
        weights: str | None = "DEFAULT",
        weights_file: str | None = None,
        allow_random_init: bool = False,
        head: Mapping[str, Any] | None = None,
        freeze: bool | str = "frozen",
        unfreeze_at_epoch: int = 2,
        backbone_lr_ratio: float = 0.1,
        lr: float = 1e-3,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        label_smoothing: float = 0.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer={optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"model.scheduler={scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        at_least("model.lr", lr, 0)  # the rule validate() applies to the config
        if len(class_names) < 2:
            raise ValueError(f"need at least 2 classes, got {list(class_names)}")
        head = dict(head or {})
        freeze = freeze_policy(freeze)  # the rule validate() applies to model.freeze
        self.save_hyperparameters(
            {
                "class_names": list(class_names),
                "backbone": backbone,
                "weights": weights,
                "weights_file": weights_file,
                "allow_random_init": allow_random_init,
                "head": head,
                "freeze": freeze,
                "unfreeze_at_epoch": unfreeze_at_epoch,
                "backbone_lr_ratio": backbone_lr_ratio,
                "lr": lr,
                "optimizer": optimizer,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "scheduler": scheduler,
                "label_smoothing": label_smoothing,
                "channels_last": channels_last,
            }
        )
        self.class_names = list(class_names)
        built = build_backbone(backbone, weights, weights_file, allow_random_init)
        self.backbone = built.module
        if channels_last:  # NHWC convolutions: faster on oneDNN CPUs and tensor-core GPUs
            self.backbone.to(memory_format=torch.channels_last)
        self.num_features = built.num_features
        self.preprocess: Preprocess = built.preprocess
        self.pretrained = built.pretrained
        self.head = build_head(built.num_features, len(self.class_names), **head)
        if freeze == "frozen":
            self.backbone.requires_grad_(False)
        # What a training/validation/test batch holds: "images", or "features" when
        # dogbreed.data.cached_mode.CachedFeaturesMode serves the frozen backbone's cached output.
        self.batch_inputs: Literal["images", "features"] = "images"
        n = len(self.class_names)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes=n, average="micro")
                for stage in ("train", "val", "test")
            }
            | {
                f"{stage}_acc_top5": MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
                for stage in ("val", "test")
            }
        )

    def configure_callbacks(self) -> list[pl.Callback]:
        """The freeze policy travels with the module: ``gradual`` brings its own :class:`GradualUnfreeze`."""
        hp = self.hparams
        if hp.freeze != "gradual":
            return []
        return [
            GradualUnfreeze(
                unfreeze_backbone_at_epoch=int(hp.unfreeze_at_epoch),
                backbone_initial_ratio_lr=float(hp.backbone_lr_ratio),
                should_align=True,
                train_bn=True,
            )
        ]

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> BreedClassifier:
        """Keep a frozen backbone's BatchNorm/Dropout in eval mode so its statistics never drift."""
        super().train(mode)
        if mode and self.backbone_frozen:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.flatten(self.backbone(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image batch (N, 3, H, W) → logits (N, classes)."""
        return self.head(self.features(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.head(x.float()) if self.batch_inputs == "features" else self(x)
        loss = F.cross_entropy(
            logits, y, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0
        )
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            # under DDP each rank sees a shard: the loss is the mean over all of them, as the accuracy
            # metrics are, so every rank picks the same best checkpoint (a no-op in one process)
            sync_dist=True,
        )
        self.metrics[f"{stage}_acc"](logits, y)
        self.log(
            f"{stage}_acc",
            self.metrics[f"{stage}_acc"],
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
        )
        if stage != "train":
            self.metrics[f"{stage}_acc_top5"](logits, y)
            self.log(
                f"{stage}_acc_top5",
                self.metrics[f"{stage}_acc_top5"],
                on_step=False,
                on_epoch=True,
                batch_size=len(y),
            )
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.softmax(self(x), dim=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the input preprocessing, so a checkpoint loaded without its weights enum still resizes
        right."""
        checkpoint["dogbreed"] = {"preprocess": self.preprocess.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "dogbreed" in checkpoint:
            self.preprocess = Preprocess(**checkpoint["dogbreed"]["preprocess"])
        else:  # checkpoints written before the preprocessing was stored:
            # derive it from the trained weights' name
            hp = checkpoint.get("hyper_parameters", {})
            self.preprocess = preprocess_for(hp.get("backbone", self.hparams.backbone), hp.get("weights"))

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        kwargs: dict[str, Any] = {"lr": hp.lr, "weight_decay": hp.weight_decay}
        if hp.optimizer == "sgd":
            kwargs["momentum"] = hp.momentum
        optimizer = OPTIMIZERS[hp.optimizer](params, **kwargs)
        if hp.scheduler == "none":
            return optimizer
        if hp.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, self.trainer.max_epochs or 1)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hp.lr, total_steps=max(1, int(self.trainer.estimated_stepping_batches))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
