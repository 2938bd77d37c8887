"""The learning-rate finder: alone (python -m dogbreed.lr_find), before a run (lr_find=true), applied."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dogbreed.config import ConfigError


def test_finder_plots_suggests_and_leaves_the_model_as_it_was(cfg_factory, tmp_path: Path):
    from dogbreed.lr_find import find_lr
    from dogbreed.train import build

    cfg = cfg_factory(["model.lr=0.01"])
    objects = build(cfg)
    head = {k: v.clone() for k, v in objects["model"].head.state_dict().items()}
    result = find_lr(cfg, objects)
    assert result is not None and 1e-8 <= result.suggestion <= 1.0
    assert result.override == f"model.lr={result.suggestion:.3g}" and not result.applied
    assert len(result.lrs) == len(result.losses) > 10 and result.lrs == sorted(result.lrs)
    assert Path(result.plot).stat().st_size > 10_000 and Path(result.json).is_file()
    assert cfg.model.lr == 0.01 and objects["model"].hparams.lr == 0.01
    after = objects["model"].head.state_dict()
    assert all(torch.equal(head[k], after[k]) for k in head)  # Lightning restored the weights


def test_apply_trains_the_run_with_the_suggestion(cfg_factory, capsys):
    from dogbreed.train import train

    cfg = cfg_factory(["lr_find=apply", "trainer.max_epochs=1", "export.enabled=false",
                       "callbacks.debugger=null", "callbacks.profiler=null"])  # fmt: skip
    metrics, objects = train(cfg)
    out = capsys.readouterr().out
    printed = float(out.split("lr_find: suggested model.lr=")[1].split()[0])  # three significant figures
    reports = Path(cfg.paths.output_dir) / "reports"
    suggested = json.loads((reports / "lr_find.json").read_text())["suggestion"]
    assert printed == pytest.approx(suggested, rel=5e-3)
    trainer = objects["trainer"]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(suggested, rel=1e-3)
    assert objects["model"].hparams.lr == pytest.approx(suggested, rel=1e-3) == cfg.model.lr
    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["lr"] == pytest.approx(suggested, rel=1e-3)
    page = (Path(cfg.paths.output_dir) / "reports" / "index.html").read_text()
    assert "<h2>Learning-rate finder</h2>" in page and "this run trained with it" in page


def test_unbias_undoes_lightnings_extra_correction_step_and_steepest_reads_decades():
    from dogbreed.lr_find import BETA, steepest, unbias

    # Lightning 2.6's _LRCallback on a constant loss of 2.0: global_step is k + 1 at batch k.
    avg, lightning = 0.0, []
    for k in range(60):
        avg = BETA * avg + (1 - BETA) * 2.0
        lightning.append(avg / (1 - BETA ** (k + 1 + 1)))
    assert lightning[0] == pytest.approx(2.0 / (1 + BETA))  # the halved first point
    assert unbias(lightning) == pytest.approx([2.0] * 60)
    # A loss that is flat to 1e-3 then falls: the steepest point per decade is in the fall, not in the noise.
    lrs = [10 ** (-8 + 8 * i / 99) for i in range(100)]
    noise = [1e-4 * (-1) ** i for i in range(100)]
    losses = [2.0 - max(0.0, math.log10(lr) + 3) + n for lr, n in zip(lrs, noise, strict=True)]
    assert 1e-3 < steepest(lrs, losses) < 1.0
    assert steepest(lrs[:12], losses[:12]) is None  # too few points after the skipped ones


def test_bad_value_is_named_before_anything_slow(cfg_factory):
    from dogbreed.train import train

    with pytest.raises(ConfigError, match=r"lr_find='sometimes' must be false, true or apply"):
        train(cfg_factory(["lr_find=sometimes"]))


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_cli_prints_the_command_that_uses_the_suggestion(synthetic_root: Path, tmp_path: Path):
    args = [f"data.root={synthetic_root}", "data.num_workers=0", "data.batch_size=16",
            "model=mobilenet_v2", "model.allow_random_init=true", "trainer=cpu",
            f"paths.output_dir={tmp_path / 'find'}"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "dogbreed.lr_find", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    command = next(line for line in lines if line.startswith("Train with it: "))
    assert command.startswith("Train with it: python -m dogbreed.train data.root=")
    assert " model.lr=" in command and "paths.output_dir" not in command
    assert (tmp_path / "find" / "reports" / "lr_find.png").is_file()
