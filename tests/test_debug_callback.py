"""DebuggerCallback on tiny Lightning runs that provoke each rule, a healthy run where none fires,
and stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dogbreed.debug import DebuggerCallback

ALL_RULES = {
    "VanishingGradient",
    "ExplodingTensor",
    "PoorWeightInitialization",
    "LossNotDecreasing",
    "Overfit",
    "Overtraining",
    "WeightUpdateRatio",
    "DeadRelu",
}


class TinyNet(pl.LightningModule):
    """An MLP classifier; ``init`` = kaiming (healthy), zero (everything 0) or tiny (std 1e-3)."""

    def __init__(
        self,
        lr: float = 0.02,
        init: str = "kaiming",
        depth: int = 2,
        width: int = 32,
        d: int = 16,
        classes: int = 4,
    ) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same weights whatever ran before
        layers: list[nn.Module] = []
        n = d
        for _ in range(depth):
            layers += [nn.Linear(n, width), nn.ReLU()]
            n = width
        self.net = nn.Sequential(*layers, nn.Linear(n, classes))
        self.lr = lr
        self.train_losses: list[float] = []
        for m in self.net:
            if isinstance(m, nn.Linear):
                if init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, std=1e-3) if init == "tiny" else nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.train_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def blobs(
    n: int, seed: int = 0, noise: float = 1.0, random_labels: bool = False, d: int = 16, classes: int = 4
) -> TensorDataset:
    """Gaussian blobs around fixed class centres (learnable), or the same points with random labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + noise * torch.randn(n, d, generator=g)
    if random_labels:
        y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)


def fit(
    tmp_path: Path,
    model: pl.LightningModule,
    train: TensorDataset,
    val: TensorDataset,
    epochs: int,
    batch_size: int,
    rules: dict | None = None,
    interval: int = 10,
    smdebug: Any = False,
    html: bool = False,
    callbacks_extra: list[pl.Callback] | None = None,
    **trainer_kw: Any,
) -> tuple[dict, pl.Trainer, DebuggerCallback]:
    torch.manual_seed(0)
    callback = DebuggerCallback(
        output_dir=tmp_path / "reports",
        train={"save_interval": interval},
        rules=rules,
        smdebug=smdebug,
        smdebug_dir=tmp_path / "debug-output",
        html=html,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback, *(callbacks_extra or [])],
        **trainer_kw,
    )
    trainer.fit(
        model, DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=256)
    )
    report = json.loads((tmp_path / "reports" / "debugger.json").read_text())
    return report, trainer, callback


def statuses(report: dict) -> dict[str, str]:
    return {r["name"]: r["status"] for r in report["rules"]}


def issues(report: dict) -> set[str]:
    return {name for name, status in statuses(report).items() if status == "IssuesFound"}


def test_healthy_run_finds_no_issues_and_evaluates_every_rule(tmp_path: Path) -> None:
    report, trainer, _ = fit(
        tmp_path, TinyNet(lr=0.02), blobs(4096), blobs(1024, seed=1), epochs=12, batch_size=512
    )
    assert trainer.global_step == 96 and report["stopped"] is None
    assert statuses(report) == dict.fromkeys(ALL_RULES, "NoIssuesFound")
    assert all(r["message"] == "no issues found" for r in report["rules"]), report[
        "rules"
    ]  # evaluated, not skipped
    val = report["series"]["val_loss"]
    assert [s for s, _ in val] == list(range(8, 97, 8)) and val[-1][1] < val[0][1]
    assert report["params"]["Overfit"] == {
        "action": "warn",
        "start_step": 0,
        "patience": 1,
        "ratio_threshold": 0.1,
    }
    assert not (tmp_path / "debug-output").exists()  # smdebug=False


def test_learning_rate_zero_is_caught_and_stopped(tmp_path: Path) -> None:
    rules = {
        "LossNotDecreasing": {"action": "stop"},
        "WeightUpdateRatio": {},
        "VanishingGradient": {},
        "ExplodingTensor": {},
    }
    report, trainer, _ = fit(
        tmp_path,
        TinyNet(lr=0.0),
        blobs(256),
        blobs(256, seed=1),
        epochs=20,
        batch_size=32,
        rules=rules,
        min_epochs=5,
    )
    found = statuses(report)
    assert found["LossNotDecreasing"] == "IssuesFound" and found["WeightUpdateRatio"] == "IssuesFound"
    assert found["VanishingGradient"] == found["ExplodingTensor"] == "NoIssuesFound"
    lnd = next(r for r in report["rules"] if r["name"] == "LossNotDecreasing")
    # validation every 8 steps; num_steps=10: step 24 is the first with a point 10 steps back (step 8)
    assert lnd["step"] == 24 and "validation loss" in lnd["message"] and "(step 8)" in lnd["message"]
    assert report["stopped"] == {"rule": "LossNotDecreasing", "step": 24}
    assert trainer.should_stop and trainer.current_epoch < 5  # stopped despite min_epochs=5
    assert {f["rule"] for f in report["live"]} == {"LossNotDecreasing", "WeightUpdateRatio"}


def test_zero_initialisation_vanishes_gradients_and_is_poor_init(tmp_path: Path) -> None:
    report, _, _ = fit(
        tmp_path, TinyNet(lr=0.05, init="zero"), blobs(128), blobs(128, seed=1), epochs=2, batch_size=16
    )
    assert {"VanishingGradient", "PoorWeightInitialization", "DeadRelu"} <= issues(report)
    vg = next(r for r in report["rules"] if r["name"] == "VanishingGradient")
    assert vg["step"] == 0 and "net.0.weight" in vg["message"]
    assert statuses(report)["ExplodingTensor"] == "NoIssuesFound"


def test_tiny_initialisation_shrinks_activations_layer_by_layer(tmp_path: Path) -> None:
    report, _, _ = fit(
        tmp_path, TinyNet(lr=0.05, init="tiny", depth=3), blobs(64), blobs(64, seed=1), epochs=1, batch_size=8
    )
    pwi = next(r for r in report["rules"] if r["name"] == "PoorWeightInitialization")
    assert (
        pwi["status"] == "IssuesFound" and pwi["step"] == 0 and "activation-input variance" in pwi["message"]
    )


def test_memorising_a_tiny_set_overfits_and_overtrains(tmp_path: Path) -> None:
    model = TinyNet(lr=0.1, width=64)
    report, _, _ = fit(
        tmp_path,
        model,
        blobs(16, random_labels=True),
        blobs(64, seed=1, random_labels=True),
        epochs=30,
        batch_size=16,
        html=True,
    )
    assert {"Overfit", "Overtraining"} <= issues(report)
    assert statuses(report)["VanishingGradient"] == statuses(report)["ExplodingTensor"] == "NoIssuesFound"
    overtraining = next(r for r in report["rules"] if r["name"] == "Overtraining")
    assert overtraining["step"] >= 11  # needs patience_validation=10 validations without improvement
    assert report["series"]["train_loss"][-1][1] < 0.2 < report["series"]["val_loss"][-1][1]
    html = (tmp_path / "reports" / "debugger.html").read_text()
    for text in (
        "Overtraining",
        "IssuesFound",
        "Train vs validation loss",
        "Gradient norms per layer",
        "Which rule fired when",
    ):
        assert text in html
    assert html.count("data:image/png;base64,") == 4


def test_random_labels_loss_does_not_decrease(tmp_path: Path) -> None:
    report, _, _ = fit(
        tmp_path,
        TinyNet(lr=0.1),
        blobs(256, random_labels=True),
        blobs(512, seed=1, random_labels=True),
        epochs=8,
        batch_size=32,
    )
    assert "LossNotDecreasing" in issues(report)
    assert statuses(report)["VanishingGradient"] == statuses(report)["ExplodingTensor"] == "NoIssuesFound"


def test_huge_learning_rate_explodes_and_stop_ends_the_fit(tmp_path: Path) -> None:
    rules = {"ExplodingTensor": {"action": "stop"}, "VanishingGradient": {}}
    report, trainer, _ = fit(
        tmp_path,
        TinyNet(lr=1e6),
        blobs(512),
        blobs(128, seed=1),
        epochs=5,
        batch_size=16,
        rules=rules,
        min_epochs=3,
    )
    assert issues(report) == {"ExplodingTensor"}
    first = next(r for r in report["rules"] if r["name"] == "ExplodingTensor")["step"]
    assert first <= 10 and report["stopped"]["rule"] == "ExplodingTensor"
    assert trainer.global_step <= first + 2 < 32  # 32 steps per epoch: it did not finish even one


def test_layers_unfrozen_mid_run_are_recorded_from_then_on(tmp_path: Path) -> None:
    class Unfreeze(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            pl_module.net[0].requires_grad_(trainer.current_epoch >= 1)

    _, _, callback = fit(
        tmp_path,
        TinyNet(),
        blobs(64),
        blobs(32, seed=1),
        epochs=2,
        batch_size=16,
        interval=1,
        callbacks_extra=[Unfreeze()],
    )
    by_step = {r.step: r for r in callback.history.records}
    assert "net.0.weight" not in by_step[3].gradients.names and "net.2.weight" in by_step[3].gradients.names
    assert "net.0.weight" in by_step[4].gradients.names and "net.0.weight" in by_step[4].updates.names


def test_a_crashing_fit_still_writes_the_report(tmp_path: Path) -> None:
    class Crash(TinyNet):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.global_step == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, Crash(), blobs(64), blobs(32, seed=1), epochs=1, batch_size=16)
    report = json.loads((tmp_path / "reports" / "debugger.json").read_text())
    assert report["error"] == "RuntimeError: boom" and report["last_step"] == 2


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"callbacks.debugger.train.save_interval=0"):
        DebuggerCallback(output_dir=tmp_path, train={"save_interval": 0})
    with pytest.raises(ValueError, match=r"callbacks.debugger.smdebug='always'"):
        DebuggerCallback(output_dir=tmp_path, smdebug="always")
    with pytest.raises(ValueError, match=r"rules.Overfit.action"):
        DebuggerCallback(output_dir=tmp_path, rules={"Overfit": {"action": "explode"}})


def test_without_the_smdebug_extra_everything_else_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dogbreed.debug import smdebug_bridge

    monkeypatch.setattr(smdebug_bridge, "available", lambda: False)
    with pytest.raises(
        ValueError, match=r"smdebug=local needs the smdebug extra: pip install 'dogbreed\[smdebug\]'"
    ):
        DebuggerCallback(output_dir=tmp_path, smdebug="local")
    report, _, callback = fit(
        tmp_path, TinyNet(), blobs(64), blobs(32, seed=1), epochs=1, batch_size=16, smdebug="auto"
    )
    assert report["smdebug"] is None and callback.smdebug is None and len(report["rules"]) == 8


@pytest.mark.browser
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    from browser import chrome, console_errors

    fit(
        tmp_path,
        TinyNet(lr=0.0),
        blobs(64),
        blobs(64, seed=1),
        epochs=3,
        batch_size=16,
        interval=1,
        html=True,
    )
    with chrome() as driver:
        driver.get((tmp_path / "reports" / "debugger.html").as_uri())
        assert console_errors(driver) == []
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
        )
        assert len(sizes) == 4 and min(sizes) > 300
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('td.IssuesFound')).map(td => "
            "td.parentElement.cells[0].textContent)"
        )
        assert "WeightUpdateRatio" in rows
