"""The launcher's own training job, run by AWS's real ``sagemaker-training`` + ``sagemaker-pytorch-training``.

The job's Python holds torch and the two toolkits only, so everything else the job imports must come
from the ``requirements.txt`` the launcher staged (the toolkit pip-installs it, as in the container).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from jobs import TRAINING, launch_request, run_training_job, upload

from dogbreed.callbacks.metric_lines import EPOCH_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.toolkit]


def test_the_job_installs_its_requirements_and_exports_the_model(training_job: dict) -> None:
    done, base, python = training_job["done"], training_job["base"], training_job["python"]
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Installing dependencies from requirements.txt" in done.stdout
    assert "Reporting training SUCCESS" in done.stdout and (base / "output" / "success").is_file()
    # The job's libraries came from requirements.txt into the job's own layer, not from a base venv.
    job_site = next((python.parent.parent / "lib").glob("python*/site-packages"))
    for dist in ("lightning", "hydra_core", "omegaconf", "torchmetrics"):
        assert list(job_site.glob(f"{dist}-*.dist-info")), f"{dist} was not installed by the job"
    # SM_MODEL_DIR holds what SageMaker tars into model.tar.gz: the model and its handler.
    model = base / "model"
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert files == ["code/inference.py", "model.pt"]
    assert (model / "code" / "inference.py").read_text() == (base / "code/serve/inference.py").read_text()


def test_the_job_writes_its_reports_into_the_output_data(training_job: dict) -> None:
    data = training_job["base"] / "output" / "data"
    metrics = json.loads((data / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0.0 <= metrics["test_acc"] <= 1.0
    for report in ("debugger", "profiler"):
        rules = json.loads((data / "reports" / f"{report}.json").read_text())["rules"]
        assert rules and {r["status"] for r in rules} <= {"IssuesFound", "NoIssuesFound", "Error"}
    config = (data / ".hydra" / "config.yaml").read_text()
    assert f"root: {training_job['base'] / 'input' / 'data'}" in config  # the channels, not a local path


def test_the_requests_metric_definitions_scrape_the_job_log(training_job: dict) -> None:
    definitions = training_job["request"]["AlgorithmSpecification"]["MetricDefinitions"]
    metrics = json.loads((training_job["base"] / "output" / "data" / "metrics.json").read_text())
    lines = training_job["done"].stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert len(epoch_lines) == 2
    for definition in definitions:
        name = definition["Name"]
        found = [float(m.group(1)) for line in lines if (m := re.search(definition["Regex"], line))]
        assert found, f"metric {name}: its regex matched no line of the job log"
        if name in EPOCH_KEYS:
            assert len(found) >= len(epoch_lines), name
        if metrics.get(name) is not None:
            assert found[-1] == pytest.approx(metrics[name], rel=1e-5), name


def test_a_job_that_fails_says_why_in_the_failure_file(
    training_job: dict, moto_url: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """A dataset the launcher cannot check (an S3 prefix) whose test split lacks a class: the job fails,
    and SageMaker's FailureReason (output/failure) is dogbreed's own message, not a traceback."""
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    missing = sorted(p.name for p in (broken / "test").iterdir())[0]
    shutil.rmtree(broken / "test" / missing)
    request = launch_request(
        ["launch.job_name=dogbreed-toolkit-fails", f"launch.inputs={upload(broken, 'broken')}", *TRAINING],
        tmp_path / "launch",
    )
    base = tmp_path / "opt_ml"
    done = run_training_job(request, base, training_job["python"], moto_url, tmp_path / "job.log")
    assert done.returncode != 0
    assert "Reporting training FAILURE" in done.stdout and not (base / "output" / "success").exists()
    reason = (base / "output" / "failure").read_text()
    # Written by the shim at $SM_OUTPUT_DIR/failure; the toolkit keeps an existing file (its own text would
    # start "ExecuteUserScriptError:" and carry the script's stderr).
    assert reason.startswith("The dataset cannot be used for training") and missing in reason, reason
    assert len(reason) <= 1024
    assert not any((base / "model").iterdir())
