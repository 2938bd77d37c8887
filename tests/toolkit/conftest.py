"""Fixtures of the toolkit lanes (helpers in ``jobs.py``): a moto_server, and the launcher's training job
run under AWS's sagemaker-training + sagemaker-pytorch-training in a relocated /opt/ml."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import envs  # noqa: E402
from jobs import BUCKET, REGION, TRAINING, launch_request, run_training_job  # noqa: E402


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto_server on a free loopback port (S3 and SageMaker), credentials and region in os.environ."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "SAGEMAKER_ROLE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER"):
            mp.delenv(name, raising=False)
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        for name, value in {**creds, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": url}.items():
            mp.setenv(name, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def job_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh layer over the toolkit venv (torch + the two toolkits, nothing of dogbreed's): the job's
    ``requirements.txt`` is all that can bring lightning, hydra, … into it."""
    parent = envs.require(envs.TRAIN)
    return envs.layer(parent, tmp_path_factory.mktemp("job-venv") / "venv", with_pip=False)


@pytest.fixture(scope="session")
def training_job(
    moto_url: str, synthetic_root: Path, job_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The launcher's job (local dataset uploaded to moto), run under sagemaker-training +
    sagemaker-pytorch-training in a relocated /opt/ml."""
    root = tmp_path_factory.mktemp("toolkit-train")
    request = launch_request(
        ["launch.job_name=dogbreed-toolkit-1", f"launch.inputs={synthetic_root}", *TRAINING],
        root / "launch",
    )
    base = root / "opt_ml"
    done = run_training_job(request, base, job_python, moto_url, root / "job.log")
    return {"request": request, "base": base, "done": done, "python": job_python}
