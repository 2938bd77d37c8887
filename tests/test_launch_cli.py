"""The launch commands as a user runs them: --help, flag aliases,
and (slow) the CLIs against moto_server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launch.cli import rewrite_flags

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.mark.parametrize("module", ["launch.train", "launch.tune", "launch.deploy", "launch.transform"])
def test_help_is_the_module_docstring(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    command = __import__(module, fromlist=["main"])
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exited:
        command.main()
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(command.__doc__.strip().splitlines()[0])
    assert "== Config ==" in out and "launch:" in out


@pytest.mark.parametrize(
    ("module", "argument", "message"),
    [
        (
            "launch.train",
            "launch.job_name=bad_name",
            "error: launch.job_name='bad_name' must be 1-63 letters",
        ),
        ("launch.deploy", "deploy.model=/no/run", "error: deploy.model: /no/run does not exist"),
        ("launch.transform", "transform.max_payload_mb=0", "error: transform.max_payload_mb=0 must be 1-100"),
        ("launch.tune", "backend=elsewhere", "error: tune.backend='elsewhere' must be local or sagemaker"),
    ],
)
def test_a_refused_setting_is_one_error_line_and_exit_2(
    aws: dict,
    module: str,
    argument: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
) -> None:
    command = __import__(module, fromlist=["main"])
    argv = [f"launch.role={ROLE}", "launch.bucket=bkt", argument, f"paths.output_dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with pytest.raises(SystemExit) as exited:
        command.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_flag_aliases_become_overrides() -> None:
    aliases = {"--delete": ("deploy.delete", False), "--attach": ("tune.attach", True)}
    assert rewrite_flags(["--delete", "deploy.endpoint_name=ep"], aliases) == [
        "deploy.delete=true",
        "deploy.endpoint_name=ep",
    ]
    assert rewrite_flags(["--attach", "tune-1", "x=1"], aliases) == ["tune.attach=tune-1", "x=1"]
    assert rewrite_flags(["--attach=tune-2"], aliases) == ["tune.attach=tune-2"]
    with pytest.raises(SystemExit, match="--attach needs a value"):
        rewrite_flags(["--attach"], aliases)


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[str]:
    """``moto_server`` on 127.0.0.1 (a free port), stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    log = (tmp_path / "moto.log").open("w")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_the_commands_against_moto_server(moto_server: str, tmp_path: Path, synthetic_root: Path) -> None:
    """Same code path as against AWS: only AWS_ENDPOINT_URL differs (and, as the README says for SDK v3,
    SAGEMAKER_VALIDATE_ROLE=false: moto has no iam:SimulatePrincipalPolicy for v3's role check)."""
    import boto3

    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "SAGEMAKER_VALIDATE_ROLE": "false"}  # fmt: skip
    env.pop("AWS_PROFILE", None)
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="bkt")  # fmt: skip
    common = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.wait=true", "launch.poll_s=1"]

    def run(module: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", module, *common, *args], env=env, capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = run("launch.train", "launch.job_name=cli-job-1", "launch.inputs=s3://bkt/data", "model.lr=0.01")
    assert (
        "training_job=cli-job-1" in out
        and "model_data=s3://bkt/dogbreed/jobs/cli-job-1/output/model.tar.gz" in out
    )
    out = run("launch.tune", "backend=sagemaker", "tune.job_name=cli-tune-1", "launch.inputs=s3://bkt/data")
    assert "tuning_job=cli-tune-1" in out and "best_training_job=" in out
    answer = {"predictions": [{"label": "003.Checkerboard", "probability": 0.875, "top_k": []}]}
    request = urllib.request.Request(
        f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps(
            {"results": [{"Body": json.dumps(answer), "ContentType": "application/json"}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10)
    image = next((synthetic_root / "test").rglob("*.jpg"))
    out = run("launch.deploy", "deploy.training_job=cli-job-1", "deploy.endpoint_name=cli-ep",
              f"deploy.images=[{image}]", "deploy.batch=true")  # fmt: skip
    assert "endpoint=cli-ep" in out and f"{image}: 003.Checkerboard (0.875)" in out
    out = run("launch.deploy", "--delete", "deploy.endpoint_name=cli-ep")
    assert "deleted endpoint=cli-ep" in out
    # moto completes a transform job at once and writes no answers: every image is an error row, exit 1.
    images = sum(1 for _ in (synthetic_root / "test").rglob("*.jpg"))
    args = ["transform.training_job=cli-job-1", f"transform.images={synthetic_root / 'test'}",
            "transform.job_name=cli-tf", f"paths.output_dir={tmp_path / 'tf'}"]  # fmt: skip
    command = [sys.executable, "-m", "launch.transform", *common, *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "transform_job=cli-tf\n" in done.stdout and f"images={images} errors={images}\n" in done.stdout
    assert (tmp_path / "tf" / "predictions.csv").read_text().count("no answer in the transform job") == images
