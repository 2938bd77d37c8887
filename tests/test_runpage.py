"""The run page: reports/index.html + results.png after a real (tiny) run, read as a newcomer would."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dogbreed.metric_format import FINAL_KEYS
from dogbreed.runpage.history import read_history

LIGHTNING_CSV = """\
epoch,lr-SGD,step,test_acc,train_acc,train_loss_epoch,train_loss_step,val_acc,val_loss
,0.1,0,,,,,,
0,,1,,,,2.5,,
0,,2,,,,,0.5,1.2
0,,2,,0.4,1.8,,,
,0.05,3,,,,,,
1,,4,,,,1.1,,
1,,5,,,,,0.75,0.9
1,,5,,0.7,1.0,,,
1,,6,0.7,,,,,
"""


def test_history_has_one_row_per_epoch_with_its_learning_rate(tmp_path: Path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(LIGHTNING_CSV)
    history = read_history(csv)
    assert history == [
        {"epoch": 0.0, "lr-SGD": 0.1, "val_acc": 0.5, "val_loss": 1.2, "train_acc": 0.4, "train_loss": 1.8},
        {"epoch": 1.0, "lr-SGD": 0.05, "val_acc": 0.75, "val_loss": 0.9, "train_acc": 0.7, "train_loss": 1.0},
    ]  # step rows and the test stage left out; each LR row lands on the epoch it started


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path, run_cfg) -> dict:
    """A tiny run with the default loggers (CSV: the curves), evaluation, debugger and profiler."""
    from dogbreed.train import train

    out = tmp_path_factory.mktemp("runpage") / "run"
    cfg = run_cfg(out, synthetic_root, ["trainer.max_epochs=3", "model.lr=0.05", "report.samples=6"])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        metrics, objects = train(cfg)
    page = out / "reports" / "index.html"
    return {"metrics": metrics, "objects": objects, "out": out, "page": page, "stdout": stdout.getvalue()}


def test_page_path_is_printed_just_before_the_final_key_value_lines(run: dict):
    lines = [line for line in run["stdout"].splitlines() if line.strip()]
    assert lines[-len(FINAL_KEYS) - 1] == f"Run report: {run['page']}"
    assert [line.split("=")[0] for line in lines[-len(FINAL_KEYS) :]] == list(FINAL_KEYS)


def _inline_images(document: str) -> list[np.ndarray]:
    import base64

    images = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', document):
        images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
    return images


def test_page_has_numbers_story_curves_samples_links_and_commands(run: dict):
    document = run["page"].read_text()
    metrics, out = run["metrics"], run["out"]
    for heading in ("Headline", "What happened", "Training curves", "Training images as the model saw them",
                    "Reports", "Model", "What to run next", "Configuration"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in document, heading
    assert f"{metrics['test_acc']:.1%}" in document  # the headline card
    # The best card: the tested checkpoint's epoch and its val_acc, as metrics.json names them.
    assert (
        f"best val_acc (epoch {metrics['best_epoch']})" in document
        and f"{metrics['val_acc']:.1%}" in document
    )
    assert "Trained 3 of trainer.max_epochs=3 epochs." in document
    assert "Most confused on the test split" in document  # from evaluation.json
    for report in ("evaluation.html", "debugger.html", "profiler.html"):
        assert f'href="{report}"' in document and (out / "reports" / report).is_file()
    model_pt = Path(metrics["model_pt"]).resolve()
    assert f"python -m serve --model {model_pt}" in document
    predict = re.search(r"python -m serve\.predict (\S+) --model", document)
    assert predict and Path(predict.group(1)).is_file()  # a real image of the run's test split
    assert f"python -m dogbreed.evaluate ckpt={Path(metrics['best_checkpoint']).resolve()}" in document
    assert "MLflow" not in document and "Learning-rate finder" not in document  # neither was used
    images = _inline_images(document)
    assert len(images) == 2 and all(img.std() > 5 for img in images)  # curves and samples, not blank


def test_results_png_is_the_curves_of_this_run(run: dict):
    results = run["out"] / "reports" / "results.png"
    img = np.asarray(Image.open(results).convert("RGB"))
    assert img.shape[1] > 1000 and img.std() > 5
    history = read_history(run["out"] / "logs" / "csv" / "metrics.csv")
    assert [int(h["epoch"]) for h in history] == [0, 1, 2]
    assert all({"train_loss", "val_loss", "val_acc", "lr-SGD"} <= set(h) for h in history)


def test_links_are_only_to_reports_that_exist(tmp_path: Path):
    from dogbreed.runpage.page import links

    assert "No other reports" in links(tmp_path)
    (tmp_path / "profiler.html").write_text("<html></html>")
    assert 'href="profiler.html"' in links(tmp_path) and "evaluation.html" not in links(tmp_path)


def test_samples_are_the_views_training_used(run: dict):
    """With the frozen backbone's feature cache (views=1) the head saw centre crops: exactly those."""
    from dogbreed.data.images import load_rgb
    from dogbreed.data.transforms import eval_transform
    from dogbreed.runpage.samples import training_samples

    datamodule = run["objects"]["datamodule"]
    assert datamodule.features is not None
    before = torch.random.get_rng_state()
    samples = training_samples(datamodule, n=4, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())  # the report leaves training's RNG alone
    assert "centre crop" in samples.how and len(samples.images) == 4
    pre, dataset = datamodule.preprocess, datamodule.datasets["train"]
    centre = [eval_transform(pre)(load_rgb(p, pre.resize_size)) for p in dataset.paths]
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    crops = [((x * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for x in centre]
    for img, label in zip(samples.images, samples.labels, strict=True):
        match = [i for i, c in enumerate(crops) if np.array_equal(c, img)]
        assert match and datamodule.class_names[int(dataset.targets[match[0]])] == label


def test_samples_without_the_cache_go_through_the_augmentation(cfg_factory):
    from dogbreed.runpage.samples import training_samples
    from dogbreed.train import build

    objects = build(cfg_factory(["data.cache.enabled=false"]))
    datamodule = objects["datamodule"]
    datamodule.setup("fit")
    samples = training_samples(datamodule, n=3, seed=0)
    crop = datamodule.preprocess.crop_size
    assert "random resized crop" in samples.how and all(
        img.shape == (crop, crop, 3) for img in samples.images
    )


def test_a_broken_page_never_fails_the_run(run: dict, monkeypatch, caplog):
    import dogbreed.runpage as runpage

    monkeypatch.setattr(runpage, "build", lambda *a, **k: 1 / 0)
    cfg = run["objects"]["cfg"]
    assert runpage.write_run_page(cfg, run["metrics"], run["objects"]) is None
    assert "Could not write the run page" in caplog.text


@pytest.mark.browser
def test_page_renders_in_chromium_without_broken_images_or_errors(run: dict):
    from browser import chrome, console_errors

    with chrome() as driver:
        driver.get(run["page"].as_uri())
        assert driver.title.startswith("Run: mobilenet_v2")
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        assert broken == 0 and driver.execute_script("return document.images.length") == 2
        hrefs = driver.execute_script("return [...document.links].map(a => a.href)")
        assert hrefs and all(Path(h.removeprefix("file://")).is_file() for h in hrefs)
        assert not console_errors(driver)
        driver.find_element("link text", "Evaluation").click()
        assert driver.title == "Evaluation report" and not console_errors(driver)
