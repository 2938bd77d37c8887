"""Checkpoints load with ``weights_only=True`` everywhere: a checkpoint carrying a pickled object that would
run code on load is refused by every loader (predictor, evaluation, resume), and the code never runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from dogbreed.predict import load_checkpoint, load_model
from dogbreed.train import train


class Exploit:
    """Unpickling this writes a file: what a hostile checkpoint could do with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the checkpoint ran code"))


@pytest.fixture
def hostile(trained_run: dict, tmp_path: Path) -> tuple[Path, Path]:
    ckpt = torch.load(Path(trained_run["output_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "pwned.txt"
    ckpt["callbacks"]["Exploit"] = Exploit(marker)
    path = tmp_path / "hostile.ckpt"
    torch.save(ckpt, path)
    return path, marker


@pytest.fixture
def load_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """The ``weights_only`` argument of every ``torch.load`` call: explicit, so torch < 2.6 (whose
    default is False) is just as safe."""
    calls, real = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only", "not given"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.parametrize("loader", [load_checkpoint, load_model])
def test_predictor_loaders_refuse_pickled_code(hostile, load_calls, loader):
    path, marker = hostile
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        loader(path)
    assert not marker.exists()
    assert load_calls and all(value is True for value in load_calls)


def test_resuming_refuses_pickled_code(hostile, load_calls, cfg_factory):
    path, marker = hostile
    cfg = cfg_factory([f"ckpt_path={path}", "trainer.max_epochs=4", "logger=none", "export.enabled=false"])
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train(cfg)
    assert not marker.exists()
    assert load_calls and all(value is True for value in load_calls)
