"""train → tune → deploy → invoke → delete on moto, through whichever SDK is installed (``make test`` runs
v2 and v3). A local dataset is uploaded, the job's artifact is a model.tar.gz in moto's S3 (moto completes
jobs at once and answers invocations with queued data), and nothing sleeps: ``time.sleep`` fails the test, and
the SDK's telemetry request is asserted never to be sent. The SDK's own telemetry check is also run on a
session the launcher made: v3's training path (``TrainingJob.create``) carries no telemetry decorator today,
so that test is what shows the opt-out reaches v3."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from aws import SDK

from dogbreed.config import compose

JOB = "dogbreed-chain-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def test_train_tune_deploy_invoke_delete(
    synthetic_root: Path, tmp_path: Path, aws: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    from launch import deploy, train, tune

    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    common = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.wait=true", "launch.poll_s=30"]
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail(f"a test waited {s} s"))

    # 1. launch.train: the local dataset is uploaded, the job created and followed to its end.
    overrides = [
        *common,
        f"launch.job_name={JOB}",
        f"launch.inputs={synthetic_root}",
        "model.lr=0.05",
        f"paths.output_dir={tmp_path / 'train'}",
    ]
    record = train.run(compose("launch_train", overrides), overrides)
    assert record["status"] == "Completed" and record["hyperparameters"] == {"model.lr": "0.05"}
    uploaded = {o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="dogbreed/data/")["Contents"]}
    assert len(uploaded) == sum(1 for p in synthetic_root.rglob("*") if p.is_file())
    assert set(record["inputs"]) == {"train", "valid", "test"}
    assert json.loads((tmp_path / "train" / "launch.json").read_text())["training_job"] == JOB
    channels = {c["ChannelName"] for c in sm.describe_training_job(TrainingJobName=JOB)["InputDataConfig"]}
    assert channels == ({"train", "valid", "test"} | ({"code", "sm_drivers"} if SDK == "v3" else set()))

    # The job's artifact as SageMaker would upload it (model.pt + code/inference.py).
    artifact = io.BytesIO()
    with tarfile.open(fileobj=artifact, mode="w:gz") as tar:
        for member in ("model.pt", "code/inference.py"):
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    bucket, key = record["model_data"].removeprefix("s3://").split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=artifact.getvalue())

    # 2. launch.tune backend=sagemaker: a tuning job over the same training job; its best job is reported.
    overrides = [
        *common,
        "backend=sagemaker",
        "tune.job_name=dogbreed-tune-1",
        "launch.inputs=s3://bkt/dogbreed/data/x",
        f"paths.output_dir={tmp_path / 'tune'}",
    ]
    best = tune.run(compose("launch_tune", overrides), overrides)
    assert best["tuning_job"] == "dogbreed-tune-1" and best["status"] == "Completed"
    ranges = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="dogbreed-tune-1")[
        "HyperParameterTuningJobConfig"
    ]["ParameterRanges"]
    assert {r["Name"] for r in ranges["ContinuousParameterRanges"]} == {"model.lr", "model.momentum"}
    assert (tmp_path / "tune" / "best.json").is_file()

    # 3. launch.deploy from the training job: its artifact behind an endpoint.
    overrides = [
        *common,
        f"deploy.training_job={JOB}",
        "deploy.endpoint_name=dogbreed-ep",
        f"paths.output_dir={tmp_path / 'dep'}",
    ]
    predictor = deploy.run(compose("launch_deploy", overrides))
    container = sm.describe_model(ModelName="dogbreed-ep")["PrimaryContainer"]
    assert container["ModelDataUrl"] == record["model_data"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")
    assert sm.describe_endpoint(EndpointName="dogbreed-ep")["EndpointStatus"] == "InService"

    # 4. invoke: one application/json batch; moto answers with what is queued, and our request consumes it.
    images = sorted((synthetic_root / "test").rglob("*.jpg"))[:2]
    answer = {"predictions": [{"label": "000.a", "probability": 0.9, "top_k": []}] * 2}
    backend = sagemakerruntime_backends[aws["account"]][aws["region"]]
    backend.results_queue.append((json.dumps(answer), "application/json", "AllTraffic", ""))
    assert deploy.predict_batch(predictor, images) == answer
    assert backend.results_queue == []

    # 5. --delete removes the endpoint, its config and the model.
    overrides = [
        *common,
        "deploy.endpoint_name=dogbreed-ep",
        "deploy.delete=true",
        f"paths.output_dir={tmp_path / 'dep'}",
    ]
    assert deploy.run(compose("launch_deploy", overrides)) == "dogbreed-ep"
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws["telemetry"] == []


def _sdk_telemetry() -> tuple:
    """The installed SDK's telemetry decorator and one of its features (v2: ``Estimator.fit``'s, v3:
    ``ModelTrainer.train``'s)."""
    if SDK == "v2":
        from sagemaker.telemetry.constants import Feature
        from sagemaker.telemetry.telemetry_logging import _telemetry_emitter

        return _telemetry_emitter, Feature.ESTIMATOR_V2
    from sagemaker.core.telemetry.constants import Feature
    from sagemaker.core.telemetry.telemetry_logging import _telemetry_emitter

    return _telemetry_emitter, Feature.MODEL_TRAINER


@pytest.mark.parametrize("telemetry", [False, True])
def test_sdk_telemetry_is_sent_only_with_launch_telemetry(aws: dict, telemetry: bool) -> None:
    from launch.session import make_session

    emitter, feature = _sdk_telemetry()
    session = make_session(compose("launch_train", [f"launch.telemetry={str(telemetry).lower()}"]).launch)

    class Job:
        sagemaker_session = session.native

        @emitter(feature=feature, func_name="dogbreed.test")
        def run(self) -> str:
            return "ran"

    assert Job().run() == "ran"
    assert len(aws["telemetry"]) == int(telemetry)
    aws["telemetry"].clear()  # the fixture asserts that nothing was sent


def test_v3s_role_check_against_moto_names_the_switch(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SDK v3 checks launch.role with iam:SimulatePrincipalPolicy, which moto lacks: the error says how to
    skip the check. v2 has no client-side role check: the same command creates the job."""
    import boto3

    from dogbreed.config import ConfigError
    from launch import train

    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)
    overrides = [
        f"launch.role={ROLE}",
        "launch.bucket=bkt",
        "launch.inputs=s3://bkt/data",
        "launch.wait=false",
        f"launch.job_name={JOB}",
        f"paths.output_dir={tmp_path}",
    ]
    if SDK == "v3":
        with pytest.raises(ConfigError, match="Set SAGEMAKER_VALIDATE_ROLE=false to skip"):
            train.run(compose("launch_train", overrides), overrides)
        assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    else:
        assert train.run(compose("launch_train", overrides), overrides)["training_job"] == JOB


@pytest.mark.parametrize(
    "tracking_uri", [None, "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/t"]
)
def test_mlflow_logging_job_gets_the_extra_and_the_tracking_uri(
    aws: dict,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tracking_uri: str | None,
) -> None:
    """logger=mlflow: the job installs the mlflow extra, and launch.mlflow.tracking_uri becomes its
    MLFLOW_TRACKING_URI (which the job's logger.mlflow.tracking_uri reads); without one the launch log warns
    that the job's store would die with its container."""
    import boto3
    from aws import staged_requirements

    from launch import train

    overrides = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.inputs=s3://bkt/data", "logger=mlflow",
                 f"launch.job_name={JOB}", f"paths.output_dir={tmp_path}"]  # fmt: skip
    if tracking_uri:
        overrides.append(f"launch.mlflow.tracking_uri={tracking_uri}")
    sent: list[dict] = []
    real = train.make_session

    def recording(launch):  # moto does not keep a training job's Environment: record the request
        session = real(launch)
        session.client.meta.events.register(
            "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(params)
        )
        return session

    monkeypatch.setattr(train, "make_session", recording)
    train.run(compose("launch_train", overrides), overrides)
    (request,) = sent
    assert request.get("Environment", {}).get("MLFLOW_TRACKING_URI") == tracking_uri
    assert boto3.client("sagemaker").describe_training_job(TrainingJobName=JOB)["TrainingJobStatus"]
    assert any(line.startswith("mlflow-skinny==") for line in staged_requirements())
    assert ("the job's MLflow store is a SQLite file" in caplog.text) == (tracking_uri is None)
