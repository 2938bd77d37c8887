"""The sweep page (launch.tune backend=local → <sweep dir>/reports/index.html)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from launch.sweep_page import write_sweep_page

DISTRIBUTIONS = {
    "model.lr": FloatDistribution(1e-3, 0.1, log=True),
    "data.batch_size": CategoricalDistribution([32, 64]),
}


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    """Five finished trials as launch.tune_local records them; trial 3 is best and wrote a run page."""
    study = optuna.create_study(direction="maximize", study_name="demo")
    for number, (lr, bs, value) in enumerate([(0.002, 32, 0.4), (0.01, 64, 0.6), (0.05, 32, 0.7),
                                               (0.03, 64, 0.8), (0.004, 32, 0.5)]):  # fmt: skip
        out = tmp_path / "trials" / f"{number:03d}"
        attrs = {"output_dir": str(out), "overrides": [f"model.lr={lr}", f"data.batch_size={bs}"],
                 "val_acc": value, "wall_time_s": 3.0}  # fmt: skip
        study.add_trial(create_trial(params={"model.lr": lr, "data.batch_size": bs},
                                     distributions=DISTRIBUTIONS, value=value, user_attrs=attrs))  # fmt: skip
    study.add_trial(
        create_trial(state=TrialState.FAIL, params={"model.lr": 0.09, "data.batch_size": 64},
                     distributions=DISTRIBUTIONS, user_attrs={"error": "ValueError: model.optimizer='x'"})
    )  # fmt: skip
    page = tmp_path / "trials" / "003" / "reports" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<!DOCTYPE html><title>Run: trial 3</title>")
    return study


def test_page_has_best_trial_history_importances_and_every_trial(study, tmp_path: Path, capsys):
    summary = {"best_trial": 3, "best_value": 0.8, "best_yaml": str(tmp_path / "best.yaml")}
    path = write_sweep_page(study, tmp_path, summary)
    assert path == tmp_path / "reports" / "index.html"
    assert capsys.readouterr().out.strip() == f"Sweep report: {path}"
    document = path.read_text()
    assert "Trial <b>3</b>: objective <b>0.8</b>" in document
    assert f"python -m dogbreed.train --config-path {tmp_path} --config-name best" in document
    links = re.findall(r'href="([^"]+)"', document)
    assert links == ["../trials/003/reports/index.html"] * 2  # from the best trial and its table row
    assert (path.parent / links[0]).resolve() == (tmp_path / "trials/003/reports/index.html").resolve()
    importances = re.search(r"<h2>Parameter importances</h2>(.*?)<h2>", document, re.S).group(1)
    assert "model.lr" in importances and "data.batch_size" in importances
    assert document.count("data:image/png;base64,") == 2  # history + importances
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\w+)</td>", document)
    assert rows == [(str(n), "COMPLETE") for n in range(5)] + [("5", "FAIL")]
    assert "ValueError: model.optimizer=&#x27;x&#x27;" in document


def test_page_with_no_completed_trial_says_so(tmp_path: Path):
    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"error": "RuntimeError: boom"}))
    document = write_sweep_page(study, tmp_path, {}).read_text()
    assert "No trial completed" in document and "RuntimeError: boom" in document


def test_local_sweep_writes_its_page(synthetic_root: Path, tmp_path: Path):
    from dogbreed.config import compose
    from launch import tune

    overrides = [
        f"data.root={synthetic_root}", "data.num_workers=0", "data.batch_size=16", "model=mobilenet_v2",
        "model.allow_random_init=true", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "tune.space.batch_size=null", "tune.space.epochs=null", "tune.space.momentum=null",
        "backend=local", "tune.max_jobs=2", f"paths.output_dir={tmp_path}",
    ]  # fmt: skip
    summary = tune.run(compose("launch_tune", overrides), overrides)
    assert summary["report"] == tmp_path / "reports" / "index.html"
    document = summary["report"].read_text()
    best = f"../trials/{summary['best_trial']:03d}/reports/index.html"
    assert f'href="{best}"' in document and (summary["report"].parent / best).is_file()


@pytest.mark.browser
def test_page_renders_in_chromium_without_broken_images_or_errors(study, tmp_path: Path):
    from browser import chrome, console_errors

    summary = {"best_trial": 3, "best_value": 0.8, "best_yaml": str(tmp_path / "best.yaml")}
    path = write_sweep_page(study, tmp_path, summary)
    with chrome() as driver:
        driver.get(path.as_uri())
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        assert broken == 0 and not console_errors(driver)
        driver.find_element("link text", "Its run page").click()
        assert driver.title == "Run: trial 3" and not console_errors(driver)
