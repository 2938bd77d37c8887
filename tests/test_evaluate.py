"""The evaluation report end to end: a known confusion, TorchScript and checkpoint models, CLI, browser.

The look-alike data: four colour classes where ``Red_a`` and ``Red_b`` are drawn from the very same
distribution, so no model can tell them apart while ``Green`` and ``Blue`` are trivial. A tiny TorchScript
model (mean colour → linear) is trained on it in well under a second.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from torchvision.datasets import ImageFolder

from dogbreed.backbones import Preprocess, preprocess_for
from dogbreed.config import ConfigError, compose
from dogbreed.data.layout import DatasetError
from dogbreed.data.transforms import eval_transform
from dogbreed.evaluate import evaluate, load_source, predict_split
from dogbreed.evaluate.cli import run as cli_run
from dogbreed.export import ExportedClassifier, package

REPO = Path(__file__).resolve().parents[1]
COLOURS = {
    "001.Red_a": (200, 50, 50),
    "002.Red_b": (200, 50, 50),
    "003.Green": (50, 190, 60),
    "004.Blue": (40, 60, 200),
}
TWINS = {"001.Red_a", "002.Red_b"}


def _write_split(folder: Path, per_class: int, rng: np.random.Generator, colours: dict) -> None:
    for name, colour in colours.items():
        (folder / name).mkdir(parents=True)
        for k in range(per_class):
            base = np.array(colour) + rng.integers(-30, 31, 3)
            pixels = np.clip(base + rng.integers(-40, 41, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{k:03d}.png")


def _uint8(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Look-alike dataset plus a tiny trained export: model.pt and a SageMaker-style model.tar.gz."""
    base = tmp_path_factory.mktemp("twins")
    rng = np.random.default_rng(0)
    _write_split(base / "data" / "train", 20, rng, COLOURS)
    _write_split(base / "data" / "test", 10, rng, COLOURS)
    names = sorted(COLOURS)
    torch.manual_seed(0)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(3, len(names)))
    model = ExportedClassifier(net, Preprocess(resize_size=32, crop_size=32), names)
    paths = [(p, i) for i, n in enumerate(names) for p in sorted((base / "data" / "train" / n).iterdir())]
    x = model.preprocess(torch.stack([_uint8(p) for p, _ in paths]))
    y = torch.tensor([i for _, i in paths])
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    pt = base / "export" / "model.pt"
    pt.parent.mkdir()
    torch.jit.script(model.eval()).save(str(pt))
    tar = package(pt, base / "sagemaker" / "model.tar.gz", Path(__file__))
    return {"root": base / "data", "model_pt": pt, "model_tar": tar, "base": base}


@pytest.fixture(scope="module")
def twin_report(twins: dict[str, Path]):
    return evaluate(twins["model_tar"], twins["root"] / "test", twins["base"] / "reports")


def test_report_names_the_look_alike_pair_first(twin_report) -> None:
    m = twin_report.metrics
    first = m.most_confused[0]
    assert {first["a"], first["b"]} == TWINS
    assert first["count"] == m.confusion[0, 1] + m.confusion[1, 0] >= 5  # ~half of 20 look-alike images
    assert first["count"] == m.errors  # and nothing else is ever confused
    recall = {row["class"]: row["recall"] for row in m.per_class}
    assert recall["003.Green"] == recall["004.Blue"] == 1.0
    saved = json.loads(twin_report.json.read_text())
    assert {saved["most_confused"][0]["a"], saved["most_confused"][0]["b"]} == TWINS
    assert saved["split"] == "test" and saved["model"].endswith("model.tar.gz") and saved["num_images"] == 40
    block = [row[1:] for row in csv.reader(twin_report.files["confusion_csv"].open())][1:]
    assert [[int(v) for v in row] for row in block] == m.confusion.tolist()
    for key in ("confusion_png", "reliability_png", "top_losses_png"):
        with Image.open(twin_report.files[key]) as img:
            assert img.format == "PNG" and min(img.size) > 200
        assert saved["files"][key] == twin_report.files[key].name


def test_metrics_match_the_models_own_outputs(twins: dict[str, Path], twin_report) -> None:
    """Feed every test image to model.pt by hand and count: the report must say the same."""
    module = torch.jit.load(str(twins["model_pt"]))
    names = list(module.class_names)
    cm = [[0] * len(names) for _ in names]
    right_in_top2 = 0
    for t, name in enumerate(names):
        for path in sorted((twins["root"] / "test" / name).iterdir()):
            probs = module.predict_images([_uint8(path)])[0].tolist()
            cm[t][max(range(len(names)), key=probs.__getitem__)] += 1
            right_in_top2 += sum(1 for p in probs if p > probs[t]) < 2
    saved = json.loads(twin_report.json.read_text())
    assert twin_report.metrics.confusion.tolist() == cm
    assert saved["top1"] == pytest.approx(sum(cm[i][i] for i in range(len(names))) / 40, abs=1e-6)
    assert saved["top5"] == 1.0 and right_in_top2 == 40  # the twin is always the runner-up
    worst = saved["top_losses"][0]
    assert {worst["true"], worst["predicted"]} == TWINS and worst["loss"] >= saved["top_losses"][-1]["loss"]


def test_train_writes_the_report_and_it_agrees_with_a_direct_computation(trained_run: dict) -> None:
    out = Path(trained_run["output_dir"])
    saved = json.loads((out / "reports" / "evaluation.json").read_text())
    assert trained_run["eval_top1"] == saved["top1"] and trained_run["eval_ece"] == saved["ece"]
    assert trained_run["eval_top5"] == saved["top5"] and trained_run["eval_macro_f1"] == saved["macro"]["f1"]
    assert trained_run["evaluation_report"] == str(out / "reports" / "evaluation.html")
    assert saved["model"] == trained_run["best_checkpoint"] and saved["num_images"] == 16
    # Direct: the checkpoint's network, fed the way the run's config says (its weights' preprocessing),
    # in fp32.
    run_cfg = OmegaConf.load(out / ".hydra" / "config.yaml")
    test_dir = Path(saved["folder"])
    dataset = ImageFolder(
        str(test_dir), transform=eval_transform(preprocess_for(run_cfg.model.backbone, run_cfg.model.weights))
    )
    net = load_source(trained_run["best_checkpoint"])
    with torch.no_grad():
        logits = net(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    direct = float((logits.argmax(1) == torch.tensor(dataset.targets)).float().mean())
    # Frozen backbone: the report reuses the run's cached (bf16) test features, exactly as trainer.test did;
    # the fp32 forward pass may differ by a near-tie image at most.
    assert saved["top1"] == pytest.approx(trained_run["test_acc"])
    assert abs(saved["top1"] - direct) <= 1 / 16 + 1e-6
    # The exported model, fed uint8 images through its own preprocessing, agrees with the checkpoint.
    test_dir = Path(saved["folder"])
    eager = predict_split(net, test_dir)
    scripted = predict_split(load_source(out / "model" / "model.tar.gz"), test_dir)
    assert torch.equal(eager.targets, scripted.targets) and eager.paths == scripted.paths
    # On CPU the export resizes uint8 with torchvision's own kernel: the same pixels as the eval transform.
    assert float((eager.probs - scripted.probs).abs().max()) < 1e-3
    top2 = eager.probs.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 0.1
    assert torch.equal(eager.probs.argmax(1)[clear], scripted.probs.argmax(1)[clear]) and clear.sum() >= 8


def test_cli_evaluates_a_run_checkpoint_on_the_runs_own_data(trained_run: dict, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dogbreed.evaluate",
            f"ckpt={trained_run['best_checkpoint']}",
            "split=val",
            f"output_dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Evaluation report: {tmp_path / 'evaluation_valid.html'}" in result.stdout
    assert "eval_top1=" in result.stdout and "eval_ece=" in result.stdout
    saved = json.loads((tmp_path / "evaluation_valid.json").read_text())
    assert saved["split"] == "valid" and saved["num_images"] == 16 and Path(saved["folder"]).name == "valid"


def test_cli_errors_say_what_to_do(twins: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        cli_run(compose("eval", [f"ckpt={tmp_path / 'nope.ckpt'}"]))
    with pytest.raises(ConfigError, match="data=folder data.root="):
        cli_run(compose("eval", [f"ckpt={twins['model_pt']}"]))
    odd = tmp_path / "odd"
    _write_split(odd / "test", 2, np.random.default_rng(1), {**COLOURS, "005.Purple": (150, 40, 160)})
    with pytest.raises(DatasetError, match=r"not trained on: 005\.Purple"):
        cli_run(compose("eval", [f"ckpt={twins['model_pt']}", "data=folder", f"data.root={odd}"]))
    with pytest.raises(DatasetError, match="no valid"):
        cli_run(
            compose("eval", [f"ckpt={twins['model_pt']}", "data=folder", f"data.root={odd}", "split=valid"])
        )
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="neither a Lightning checkpoint"):
        cli_run(compose("eval", [f"ckpt={junk}", "data=folder", f"data.root={odd}"]))
    report = cli_run(
        compose("eval", [f"ckpt={twins['model_pt'].parent}", "data=folder", f"data.root={twins['root']}"])
    )
    # Not inside a training run: the report goes beside ckpt.
    assert report.html == twins["model_pt"].parent / "reports" / "evaluation.html"


@pytest.mark.browser
def test_html_report_is_self_contained_and_renders(twin_report, tmp_path: Path) -> None:
    from browser import chrome, console_errors

    document = twin_report.html.read_text()
    assert "http://" not in document and "https://" not in document
    with chrome() as driver:
        driver.get(twin_report.html.as_uri())
        assert not console_errors(driver)
        images = driver.find_elements("css selector", "img.plot")
        assert len(images) == 3
        assert all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            for img in images
        )
        headings = [h.text for h in driver.find_elements("css selector", "h2")]
        assert headings[:3] == ["Summary", "Most-confused pairs", "Confusion matrix"]
        first_pair = driver.find_elements("css selector", "h2 + p + table tbody tr")[0].text
        assert "Red_a" in first_pair and "Red_b" in first_pair
        driver.save_screenshot(str(tmp_path / "evaluation.png"))
