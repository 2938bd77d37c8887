"""launch.deploy: exact CreateModel / CreateEndpointConfig / CreateEndpoint payloads (the same under both
SDKs), the predictor's requests, a serverless endpoint from a local run on moto, --delete's order and its
report, and archives that would not serve are refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from aws import stub_session
from botocore.stub import Stubber

from dogbreed.config import ConfigError, compose

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"
ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}


def model_archive(path: Path, members: tuple[str, ...] = ("model.pt", "code/inference.py")) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def test_deploy_payloads_and_a_bounded_wait(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launch import deploy

    def plan(stubber: Stubber) -> None:
        stubber.add_response(
            "create_model",
            {"ModelArn": ARN},
            {
                "ModelName": "ep-1",
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {
                    "Image": INFERENCE_IMAGE,
                    "ModelDataUrl": "s3://bkt/m/model.tar.gz",
                    "Environment": ENV,
                },
            },
        )
        stubber.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": ARN},
            {
                "EndpointConfigName": "ep-1",
                "ProductionVariants": [
                    {
                        "ModelName": "ep-1",
                        "VariantName": "AllTraffic",
                        "InitialVariantWeight": 1,
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.large",
                    }
                ],
            },
        )
        stubber.add_response(
            "create_endpoint",
            {"EndpointArn": ARN},
            {"EndpointName": "ep-1", "EndpointConfigName": "ep-1", "Tags": []},
        )
        stubber.add_response(
            "describe_endpoint",
            {
                "EndpointName": "ep-1",
                "EndpointArn": ARN,
                "EndpointStatus": "Creating",
                "CreationTime": 0,
                "LastModifiedTime": 0,
            },
            {"EndpointName": "ep-1"},
        )

    made = stub_session(deploy, monkeypatch, plan)
    overrides = [
        f"launch.role={ROLE}",
        "launch.bucket=bkt",
        "deploy.model=s3://bkt/m/model.tar.gz",
        "deploy.endpoint_name=ep-1",
        "launch.timeouts.endpoint_s=5",
        "launch.poll_s=30",
        f"paths.output_dir={tmp_path}",
    ]
    # Still Creating, and one more poll would pass launch.timeouts.endpoint_s: the error names the key.
    with pytest.raises(
        TimeoutError, match=r"Endpoint ep-1 is still Creating .* launch\.timeouts\.endpoint_s=5"
    ):
        deploy.run(compose("launch_deploy", overrides))
    made["stubber"].assert_no_pending_responses()


def test_deploy_serverless_from_a_local_run_and_send_jpeg(aws: dict, tmp_path: Path) -> None:
    import boto3

    from launch import deploy

    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    model_archive(run_dir / "model" / "model.tar.gz")
    overrides = [
        f"launch.role={ROLE}",
        "launch.bucket=bkt",
        f"deploy.model={run_dir}",
        "deploy.endpoint_name=ep-1",
        "deploy.serverless.enabled=true",
        "deploy.serverless.memory_size_in_mb=2048",
        f"paths.output_dir={tmp_path}",
    ]
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
    runtime = Stubber(predictor.runtime)
    answer = {"predictions": [{"label": "001.Affenpinscher", "probability": 0.9, "top_k": []}]}
    runtime.add_response(
        "invoke_endpoint",
        {
            "Body": io.BytesIO(
                b'{"predictions": [{"label": "001.Affenpinscher", "probability": 0.9, "top_k": []}]}'
            ),
            "ContentType": "application/json",
        },
        {
            "EndpointName": "ep-1",
            "Body": image.read_bytes(),
            "ContentType": "image/jpeg",
            "Accept": "application/json",
        },
    )
    with runtime:
        assert deploy.predict_file(predictor, image) == answer
    runtime.assert_no_pending_responses()


def delete_plan(stubber: Stubber, fail: str | None) -> None:
    """Describe endpoint + config, then delete endpoint → config → model; ``fail``: the step AWS refuses."""
    stubber.add_response(
        "describe_endpoint",
        {
            "EndpointName": "ep",
            "EndpointArn": ARN,
            "EndpointConfigName": "ep-cfg",
            "EndpointStatus": "InService",
            "CreationTime": 0,
            "LastModifiedTime": 0,
        },
        {"EndpointName": "ep"},
    )
    stubber.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": "ep-cfg",
            "EndpointConfigArn": ARN,
            "CreationTime": 0,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "ep-model"}],
        },
        {"EndpointConfigName": "ep-cfg"},
    )
    calls = [
        ("delete_endpoint", {"EndpointName": "ep"}),
        ("delete_endpoint_config", {"EndpointConfigName": "ep-cfg"}),
        ("delete_model", {"ModelName": "ep-model"}),
    ]
    for operation, params in calls:
        if operation == fail:
            stubber.add_client_error(
                operation, "AccessDeniedException", "not allowed", 400, expected_params=params
            )
            if operation == "delete_endpoint":
                return  # config and model are kept: the endpoint still serves from them
        else:
            stubber.add_response(operation, {}, params)


@pytest.mark.parametrize(
    ("fail", "remaining"),
    [
        (None, []),
        ("delete_endpoint_config", ["endpoint_config=ep-cfg (not allowed)"]),
        (
            "delete_endpoint",
            ["endpoint=ep (not allowed)", "endpoint_config=ep-cfg (kept", "model=ep-model (kept"],
        ),
    ],
)
def test_delete_goes_endpoint_first_and_reports_what_remains(
    aws: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    fail: str | None,
    remaining: list[str],
) -> None:
    from launch import deploy

    made = stub_session(deploy, monkeypatch, lambda s: delete_plan(s, fail))
    cfg = compose("launch_deploy", ["deploy.endpoint_name=ep", "deploy.delete=true", "launch.bucket=bkt"])
    if fail is None:
        assert deploy.run(cfg) == "ep"
    else:
        with pytest.raises(SystemExit) as exited:
            deploy.run(cfg)
        assert exited.value.code == 1
    made["stubber"].assert_no_pending_responses()  # every call in order: endpoint, config, model
    out, err = capsys.readouterr()
    assert ("deleted model=ep-model" in out) == (fail in (None, "delete_endpoint_config"))
    for line in remaining:
        assert f"could not delete {line}" in err


def test_deploy_refuses_an_archive_without_the_handler(tmp_path: Path) -> None:
    from launch.model import local_archive

    with pytest.raises(ConfigError, match="deploy.model: .* lacks code/inference.py"):
        local_archive(str(model_archive(tmp_path / "model.tar.gz", ("model.pt",))), "deploy.model")
    with pytest.raises(ConfigError, match="transform.model: .* does not exist"):
        local_archive(str(tmp_path / "nowhere"), "transform.model")
