"""The job as SDK v3 runs it: ModelTrainer's own ``sm_train.sh`` driver, no training toolkit.

SDK v3 (``sagemaker.train.ModelTrainer``) submits the job with ``ContainerEntrypoint=/bin/bash`` running
``/opt/ml/input/data/sm_drivers/sm_train.sh``, a script it generates and uploads as the ``sm_drivers``
channel with its Python drivers (``scripts/environment.py`` writes its own ``SM_*`` variables,
``basic_script_driver.py`` runs the entry script with ``--key value`` arguments). That driver hard-codes
``/opt/ml``, so the job runs in a private mount namespace whose ``/opt/ml`` is the laid-out folder. The
job's Python holds torch only (a layer over ``.venv-torch``): everything else comes from requirements.txt,
which the driver installs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import envs
import opt_ml
import pytest
from jobs import JOB_TIMEOUT_S, REGION, ROLE, TRAINING, boto_s3, upload

pytestmark = [pytest.mark.slow, pytest.mark.toolkit]


def _v3_request(moto: str, data: Path, prefix: str, job: str, tmp: Path) -> dict[str, Any]:
    """CreateTrainingJob as ``launch.train launch.sdk=v3`` sends it (in ``.venv-v3``), ``data`` uploaded
    to ``s3://bkt/<prefix>`` as its ``launch.inputs``."""
    import boto3

    iam = boto3.client("iam")
    role_name = ROLE.rsplit("/", 1)[1]
    if not any(r["RoleName"] == role_name for r in iam.list_roles()["Roles"]):  # v3 looks the role up
        trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                "Action": "sts:AssumeRole"}]}  # fmt: skip
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    python = envs.require(envs.V3) / "bin" / "python"
    overrides = [*TRAINING, f"launch.inputs={upload(data, prefix)}", f"launch.job_name={job}"]
    env = {**os.environ, "AWS_ENDPOINT_URL": moto, "AWS_MAX_ATTEMPTS": "1",
           # moto has no iam:SimulatePrincipalPolicy, which v3 calls to validate the role.
           "SAGEMAKER_VALIDATE_ROLE": "false"}  # fmt: skip
    script = Path(__file__).with_name("v3_request.py")
    done = subprocess.run(
        [str(python), str(script), str(tmp / "request.json"), str(tmp / "launch"), *overrides],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads((tmp / "request.json").read_text())


def _run_v3_job(request: dict[str, Any], base: Path, python: Path, log: Path) -> subprocess.CompletedProcess:
    """Lay out ``base``, then run the request's own entrypoint with ``/opt/ml`` → ``base``."""
    opt_ml.lay_out(base, request, boto_s3())
    spec = request["AlgorithmSpecification"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(opt_ml.container_env(request, None, REGION), PYTHONUNBUFFERED="1")
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"  # the image's python3 and pip3
    command = opt_ml.at_opt_ml(base, [*spec["ContainerEntrypoint"], *spec["ContainerArguments"]])
    with log.open("w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=JOB_TIMEOUT_S)
    return subprocess.CompletedProcess(command, done.returncode, log.read_text())


@pytest.fixture(scope="module")
def v3_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch only (and pip, which sm_train.sh looks for): the driver installs the rest."""
    return envs.layer(envs.require(envs.TORCH), tmp_path_factory.mktemp("v3-job-venv") / "venv")


@pytest.fixture(scope="module")
def v3_job(moto_url: str, synthetic_root: Path, v3_python: Path, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("toolkit-v3")
    request = _v3_request(moto_url, synthetic_root, "v3data", "dogbreed-v3", root)
    base = root / "opt_ml"
    return {"request": request, "base": base, "done": _run_v3_job(request, base, v3_python, root / "job.log")}


def test_v3_submits_its_driver_not_the_toolkit(v3_job: dict) -> None:
    spec = v3_job["request"]["AlgorithmSpecification"]
    assert spec["ContainerEntrypoint"] == ["/bin/bash"]
    assert "/opt/ml/input/data/sm_drivers/sm_train.sh" in spec["ContainerArguments"][-1]
    channels = {c["ChannelName"] for c in v3_job["request"]["InputDataConfig"]}
    assert channels == {"train", "valid", "test", "code", "sm_drivers"}
    assert (v3_job["base"] / "input" / "data" / "sm_drivers" / "sm_train.sh").is_file()


def test_the_v3_driver_installs_the_requirements_and_the_shim_fills_the_model_dir(
    v3_job: dict, v3_python: Path
) -> None:
    done, base = v3_job["done"], v3_job["base"]
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Training Container Execution Completed" in done.stdout
    job_site = next((v3_python.parent.parent / "lib").glob("python*/site-packages"))
    for dist in ("lightning", "hydra_core", "torchmetrics"):
        assert list(job_site.glob(f"{dist}-*.dist-info")), f"{dist} was not installed by the v3 driver"
    model = base / "model"
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "code/inference.py",
        "model.pt",
    ]
    data = base / "output" / "data"
    assert json.loads((data / "metrics.json").read_text())["epochs"] == 2
    assert {"debugger.json", "profiler.json"} <= {p.name for p in (data / "reports").iterdir()}
    # The shim read the driver's variables: channels, output and model dirs under /opt/ml.
    assert "root: /opt/ml/input/data" in (data / ".hydra" / "config.yaml").read_text()


def test_the_metric_definitions_scrape_the_v3_driver_log(v3_job: dict) -> None:
    """The driver re-logs each line of the script with its own prefix: the regexes still match."""
    lines = v3_job["done"].stdout.splitlines()
    metrics = json.loads((v3_job["base"] / "output" / "data" / "metrics.json").read_text())
    for definition in v3_job["request"]["AlgorithmSpecification"]["MetricDefinitions"]:
        found = [float(m.group(1)) for line in lines if (m := re.search(definition["Regex"], line))]
        assert found, definition["Name"]
        if metrics.get(definition["Name"]) is not None:
            assert found[-1] == pytest.approx(metrics[definition["Name"]], rel=1e-5), definition["Name"]


def test_a_failing_v3_job_writes_dogbreeds_reason_to_the_failure_file(
    v3_job: dict, moto_url: str, synthetic_root: Path, v3_python: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    missing = sorted(p.name for p in (broken / "test").iterdir())[0]
    shutil.rmtree(broken / "test" / missing)
    request = _v3_request(moto_url, broken, "v3broken", "dogbreed-v3-fails", tmp_path)
    done = _run_v3_job(request, tmp_path / "opt_ml", v3_python, tmp_path / "job.log")
    assert done.returncode != 0
    reason = (tmp_path / "opt_ml" / "output" / "failure").read_text()
    # The driver writes a traceback of its own subprocess call only when the file does not exist yet.
    assert reason.startswith("The dataset cannot be used for training") and missing in reason, reason
