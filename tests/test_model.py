"""BreedClassifier: freeze policies do what they say (requires_grad, BN stats, optimizer param groups)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dogbreed.model import BreedClassifier, build_head
from dogbreed.train import train


def make(**kwargs) -> BreedClassifier:
    return BreedClassifier(class_names=["a", "b", "c"], backbone="mobilenet_v2", weights=None, **kwargs)


def bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_backbone_trains_only_the_head_and_keeps_bn_stats():
    model = make(freeze="frozen", lr=0.1)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.backbone.training and model.head.training
    before_bn = bn_stats(model.backbone)
    before_w = [p.clone() for p in model.backbone.parameters()]
    opt = model.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_bn, bn_stats(model.backbone), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before_w, model.backbone.parameters(), strict=True))


@pytest.mark.parametrize("freeze", ["full", False])
def test_full_finetune_trains_everything(freeze):
    model = make(freeze=freeze)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.backbone.training
    before_bn = bn_stats(model.backbone)
    model(torch.randn(4, 3, 64, 64))
    assert not all(torch.equal(a, b) for a, b in zip(before_bn, bn_stats(model.backbone), strict=True))
    opt = model.configure_optimizers()
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="model.optimizer"):
        make(optimizer="rmsprop")
    with pytest.raises(ValueError, match="model.scheduler"):
        make(scheduler="step")
    with pytest.raises(ValueError, match="model.freeze"):
        make(freeze="half")
    with pytest.raises(ValueError, match="model.head.type"):
        build_head(8, 2, type="transformer")


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizers(name, cls):
    opt = make(optimizer=name, lr=0.01).configure_optimizers()
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.01


def test_mlp_head_has_dropout_and_hidden_layer():
    model = make(head={"type": "mlp", "hidden_dim": 32, "dropout": 0.5})
    layers = list(model.head)
    assert isinstance(layers[0], nn.Linear) and layers[0].out_features == 32
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in layers)


def test_class_names_are_stored_in_the_checkpoint_hparams(trained_run, synthetic_root):
    # Read back from the checkpoint file the run wrote, not from the model in memory.
    classes = sorted(p.name for p in (synthetic_root / "train").iterdir())
    ckpt = trained_run["best_checkpoint"]
    assert (
        torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["class_names"] == classes
    )
    restored = BreedClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None)
    assert restored.class_names == list(restored.hparams.class_names) == classes
    with torch.no_grad():
        assert restored.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, len(classes))


def test_gradual_unfreezes_backbone_with_lower_lr(cfg_factory):
    cfg = cfg_factory(
        [
            "model.freeze=gradual",
            "model.unfreeze_at_epoch=1",
            "model.backbone_lr_ratio=0.1",
            "model.lr=0.01",
            "data.batch_size=4",  # the unfrozen path runs the backbone at 224 px: keep the two steps small
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "test=false",
            "export.enabled=false",
            "logger=none",
        ]
    )
    seen: dict[int, tuple[bool, list[float]]] = {}

    from lightning.pytorch import Callback

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # after every epoch-start hook
            opt = trainer.optimizers[0]
            convs = [m.weight for m in pl_module.backbone.modules() if isinstance(m, nn.Conv2d)]
            bns = [m for m in pl_module.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
            seen[trainer.current_epoch] = (
                any(w.requires_grad for w in convs),
                [g["lr"] for g in opt.param_groups],
                {(m.training, m.weight.requires_grad) for m in bns},
            )

    train(cfg, extra_callbacks=[Record()])
    assert seen[0][0] is False and len(seen[0][1]) == 1
    # One BatchNorm rule: frozen with the backbone (no gradients, eval mode) in the head-only epoch ...
    assert seen[0][2] == {(False, False)}
    trainable, lrs, bn = seen[1]
    assert trainable and len(lrs) == 2
    assert lrs[1] == pytest.approx(lrs[0] * 0.1)
    assert bn == {(True, True)}  # ... and trained with it after the unfreeze epoch


def test_gradual_policy_travels_with_the_module_under_a_users_own_trainer():
    from dogbreed.model import BreedClassifier, GradualUnfreeze

    gradual = BreedClassifier(
        ["a", "b"],
        backbone="mobilenet_v2",
        weights=None,
        allow_random_init=True,
        freeze="gradual",
        unfreeze_at_epoch=3,
    )
    (callback,) = gradual.configure_callbacks()
    assert isinstance(callback, GradualUnfreeze) and callback.unfreeze_backbone_at_epoch == 3
    callback.freeze_before_training(gradual)
    assert gradual.backbone_frozen and not gradual.train().backbone.training
    frozen = BreedClassifier(["a", "b"], backbone="mobilenet_v2", weights=None, allow_random_init=True)
    assert frozen.configure_callbacks() == [] and not frozen.train().backbone.training
