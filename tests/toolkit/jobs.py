"""Helpers of the toolkit lanes: the launcher's own request, captured as sent, and a job run from it.

``launch.train`` runs in-process against a moto_server (``AWS_ENDPOINT_URL`` only, as a user would point
it at LocalStack); ``capture.captured`` records the ``CreateTrainingJob`` parameters botocore sends,
whichever SDK builds them. The job then runs in a subprocess, in ``$SAGEMAKER_BASE_DIR`` laid out from
that request (``opt_ml``), and fetches its code from the same moto_server as the container would from S3.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import opt_ml
from capture import captured

REGION = "us-east-1"
BUCKET = "bkt"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
# A tiny, fast job: random-init MobileNetV2, two epochs on the 4-class generated dataset.
TRAINING = [
    "model=mobilenet_v2",
    "model.weights=null",  # random init, and no download attempt
    "model.lr=0.05",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "data.num_workers=0",
    "data.batch_size=16",
    "logger=none",
]
JOB_TIMEOUT_S = 1500  # a cold pip install of requirements.txt plus two tiny epochs; measured ~3-5 min


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def boto_s3():
    import boto3

    return boto3.client("s3")


def upload(folder: Path, prefix: str) -> str:
    """Copy ``folder`` to ``s3://bkt/<prefix>/`` (keys relative to it); returns that URI."""
    s3 = boto_s3()
    for path in folder.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


def launch_request(overrides: Sequence[str], output_dir: Path) -> dict[str, Any]:
    """Run ``launch.train`` (no wait) and return the CreateTrainingJob parameters it sent."""
    from dogbreed.config import compose
    from launch import train

    argv = [f"launch.role={ROLE}", f"launch.bucket={BUCKET}", f"paths.output_dir={output_dir}", *overrides]
    with captured("CreateTrainingJob") as sent:
        train.run(compose("launch_train", argv), argv)
    assert sent, "launch.train sent no CreateTrainingJob request"
    return sent


def run_training_job(
    request: dict[str, Any], base: Path, python: Path, moto: str, log: Path
) -> subprocess.CompletedProcess:
    """Lay out ``base`` from ``request`` and run the PyTorch image's ``train`` command with ``python``."""
    opt_ml.lay_out(base, request, boto_s3())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(opt_ml.container_env(request, base, REGION))
    env.update(AWS_ENDPOINT_URL=moto, PYTHONUNBUFFERED="1")
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    # `train` is sagemaker-training's console script (sagemaker_training.cli.train:main).
    command = [str(python), "-m", "sagemaker_training.cli.train"]
    with log.open("w") as out:
        done = subprocess.run(
            command, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=JOB_TIMEOUT_S
        )
    return subprocess.CompletedProcess(command, done.returncode, log.read_text())
