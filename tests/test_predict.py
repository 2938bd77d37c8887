"""One artifact resolver in the library: ``dogbreed.load_model`` reads every form a run or a SageMaker job
leaves, and the predictions agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dogbreed.model import BreedClassifier
from dogbreed.predict import load_model, load_module


def test_every_artifact_form_loads_and_predicts_alike(trained_run: dict, synthetic_root: Path) -> None:
    out = Path(trained_run["output_dir"])
    forms = {
        "checkpoint": trained_run["best_checkpoint"],
        "model.pt": out / "model" / "model.pt",
        "model folder": out / "model",
        "model.tar.gz": out / "model" / "model.tar.gz",
    }
    assert isinstance(load_module(forms["checkpoint"]), BreedClassifier)
    assert isinstance(load_module(forms["model.tar.gz"]), torch.jit.ScriptModule)
    images = sorted((synthetic_root / "test").rglob("*.jpg"))[:4]
    assert images
    predictions = {name: load_model(path).predict(images, top_k=3) for name, path in forms.items()}
    labels = {name: [p.label for p in preds] for name, preds in predictions.items()}
    assert len({tuple(v) for v in labels.values()}) == 1, labels
    reference = predictions["model.pt"]
    for preds in predictions.values():
        for got, want in zip(preds, reference, strict=True):
            assert got.probability == pytest.approx(want.probability, abs=1e-3)


def test_bad_artifacts_fail_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt: no such file"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt is neither a Lightning checkpoint"):
        load_model(junk)
