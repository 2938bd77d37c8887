"""launch.deploy: a local run's archive → model, endpoint config (serverless here), endpoint; the predictor's
requests (botocore Stubber on the runtime client); archives that would not serve are refused."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.stub import Stubber
from test_launch_aws import mocked_aws

from dogbreed.config import ConfigError, compose

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """moto in-process (see test_launch_aws.mocked_aws)."""
    with mocked_aws(monkeypatch) as state:
        yield state


def model_archive(path: Path, members: tuple[str, ...] = ("model.pt", "code/inference.py")) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def test_deploy_serverless_from_a_local_run_and_send_jpeg(aws: dict, tmp_path: Path) -> None:
    import boto3

    from launch import deploy

    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    model_archive(run_dir / "model" / "model.tar.gz")
    overrides = [f"launch.role={ROLE}", "launch.bucket=bkt", f"deploy.model={run_dir}",
                 "deploy.endpoint_name=ep-1", "deploy.serverless.enabled=true",
                 "deploy.serverless.memory_size_in_mb=2048", f"paths.output_dir={tmp_path}"]  # fmt: skip
    predictor = deploy.run(compose("launch_deploy", overrides))
    sm = boto3.client("sagemaker")
    assert (
        sm.describe_model(ModelName="ep-1")["PrimaryContainer"]["ModelDataUrl"]
        == "s3://bkt/dogbreed/models/ep-1/model.tar.gz"
    )
    variant = sm.describe_endpoint_config(EndpointConfigName="ep-1")["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    # The predictor sends the image bytes as image/jpeg (image/png by suffix) and reads JSON back.
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0jpeg")
    runtime = Stubber(predictor.sagemaker_session.sagemaker_runtime_client)
    answer = {"predictions": [{"label": "001.Affenpinscher", "probability": 0.9, "top_k": []}]}
    runtime.add_response(
        "invoke_endpoint",
        {"Body": io.BytesIO(b'{"predictions": [{"label": "001.Affenpinscher", "probability": 0.9, '
                            b'"top_k": []}]}'),
         "ContentType": "application/json"},
        {"EndpointName": "ep-1", "Body": image.read_bytes(), "ContentType": "image/jpeg",
         "Accept": "application/json"},
    )  # fmt: skip
    with runtime:
        assert deploy.predict_file(predictor, image) == answer
    runtime.assert_no_pending_responses()


def test_deploy_refuses_an_archive_without_the_handler(tmp_path: Path) -> None:
    from launch.deploy import local_archive

    with pytest.raises(ConfigError, match="lacks code/inference.py"):
        local_archive(str(model_archive(tmp_path / "model.tar.gz", ("model.pt",))))
    with pytest.raises(ConfigError, match="does not exist"):
        local_archive(str(tmp_path / "nowhere"))
