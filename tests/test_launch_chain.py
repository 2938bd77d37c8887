"""The whole SageMaker story offline: the shim trains as inside a job,
then train → tune → deploy → invoke on moto.

The in-job half runs for real (``launch.shim.main`` on generated data, SageMaker's environment variables,
``--key value`` hyperparameters); its model dir becomes the job's model.tar.gz in moto's S3, and the
endpoint's answer is what that artifact's own ``code/inference.py`` computes. No test sleeps: ``time.sleep``
fails the test while AWS calls run, and the SDK's telemetry request is asserted never to be sent.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sys
import tarfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from test_launch_aws import mocked_aws

from dogbreed.callbacks.metric_lines import EPOCH_KEYS
from dogbreed.config import compose
from launch import shim
from launch.estimator import metric_definitions

JOB = "dogbreed-chain-1"
HYPERPARAMETERS = [  # what the SageMaker toolkit passes on the command line
    "--model", "mobilenet_v2", "--model.allow_random_init", "true", "--model.lr", "0.05",
    "--model.optimizer", '"sgd"', "--data.num_workers", "0", "--data.batch_size", "16",
    "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0", "--logger", "none",
    "--++callbacks.debugger", "null", "--++callbacks.profiler", "null", "--++evaluate.enabled", "false",
    "--_tuning_objective_metric", "val_acc", "--sagemaker_program", "sagemaker_entry.py",
]  # fmt: skip
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """moto in-process (see test_launch_aws.mocked_aws)."""
    with mocked_aws(monkeypatch) as state:
        yield state


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """Run the shim in a fake /opt/ml: channels (one folder per split), model, output and checkpoint dirs."""
    opt_ml = tmp_path_factory.mktemp("opt_ml")
    channels = opt_ml / "input" / "data"
    channels.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (channels / split).symlink_to(synthetic_root / split, target_is_directory=True)
    (opt_ml / "checkpoints").mkdir()
    env = {
        **{f"SM_CHANNEL_{s.upper()}": str(channels / s) for s in ("train", "valid", "test")},
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "TRAINING_JOB_NAME": JOB,
        "DOGBREED_CHECKPOINT_DIR": str(opt_ml / "checkpoints"),
        "DOGBREED_FAILURE_FILE": str(opt_ml / "output" / "failure"),
    }
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("HYDRA_FULL_ERROR", "0")  # restored afterwards (the shim sets it)
        with redirect_stdout(stdout):
            assert shim.main(HYPERPARAMETERS) == 0
    yield {"opt_ml": opt_ml, "env": env, "stdout": stdout.getvalue()}


def test_shim_trains_and_fills_the_model_dir(job: dict) -> None:
    opt_ml = job["opt_ml"]
    assert sorted(
        p.relative_to(opt_ml / "model").as_posix() for p in (opt_ml / "model").rglob("*") if p.is_file()
    ) == [
        "code/inference.py",
        "model.pt",
    ]
    output = opt_ml / "output" / "data"
    config = (output / ".hydra" / "config.yaml").read_text()
    assert "lr: 0.05" in config and f"root: {opt_ml / 'input' / 'data'}" in config
    assert json.loads((output / "metrics.json").read_text())["epochs"] == 1
    assert (opt_ml / "checkpoints" / "last.ckpt").is_file()
    assert (opt_ml / "checkpoints" / "dogbreed-job.txt").read_text() == JOB
    # A restarted (spot-interrupted) job of the same name resumes from that checkpoint.
    plan = shim.translate(HYPERPARAMETERS, job["env"])
    assert f"ckpt_path={opt_ml / 'checkpoints' / 'last.ckpt'}" in plan.overrides


def test_metric_regexes_match_the_lines_training_printed(job: dict) -> None:
    lines = job["stdout"].splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert len(epoch_lines) == 1
    metrics = json.loads((job["opt_ml"] / "output" / "data" / "metrics.json").read_text())
    for definition in metric_definitions():
        found = [float(m.group(1)) for line in lines if (m := re.search(definition["Regex"], line))]
        name = definition["Name"]
        if name in EPOCH_KEYS:
            printed = [float(re.search(rf"\b{name}=(\S+)", line).group(1)) for line in epoch_lines]
            assert found[: len(printed)] == printed, name
        if metrics.get(name) is not None:  # the last match is the final key=value line
            assert found[-1] == pytest.approx(metrics[name], rel=1e-5), name
    test_acc = next(d["Regex"] for d in metric_definitions() if d["Name"] == "test_acc")
    assert sum(bool(re.search(test_acc, line)) for line in lines) == 1  # not fooled by test_acc_top5=


def test_a_failing_job_writes_sagemakers_failure_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOGBREED_FAILURE_FILE", str(tmp_path / "failure"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        shim.main(["--data.batch_size", "0", f"paths.output_dir={out}"])
    assert exited.value.code != 0
    assert "data.batch_size=0 must be >= 1" in (tmp_path / "failure").read_text()


def _handler_answer(model_dir: Path, body: bytes, content_type: str) -> str:
    """What SageMaker's PyTorch inference toolkit computes with the artifact's own code/inference.py."""
    spec = importlib.util.spec_from_file_location("artifact_inference", model_dir / "code" / "inference.py")
    handler = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = handler  # dataclasses in the handler look their module up
    try:
        spec.loader.exec_module(handler)
        model = handler.model_fn(str(model_dir))
        return handler.output_fn(
            handler.predict_fn(handler.input_fn(body, content_type), model), "application/json"
        )
    finally:
        del sys.modules[spec.name]


def test_train_tune_deploy_invoke_on_moto(
    job: dict, synthetic_root: Path, tmp_path: Path, aws: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    from launch import deploy, train, tune

    s3 = boto3.client("s3")
    common = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.wait=true", "launch.poll_s=30"]

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a test waited {seconds} s")

    monkeypatch.setattr("time.sleep", no_sleep)

    # 1. launch.train: the local dataset is uploaded, the job created, followed to its end.
    overrides = [*common, f"launch.job_name={JOB}", f"launch.inputs={synthetic_root}", "model.lr=0.05",
                 f"paths.output_dir={tmp_path / 'train'}"]  # fmt: skip
    record = train.run(compose("launch_train", overrides), overrides)
    assert record["status"] == "Completed"
    assert record["hyperparameters"]["model.lr"] == '"0.05"'
    uploaded = {o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="dogbreed/data/")["Contents"]}
    assert len(uploaded) == sum(1 for p in synthetic_root.rglob("*") if p.is_file())
    assert set(record["inputs"]) == {"train", "valid", "test"}
    assert json.loads((tmp_path / "train" / "launch.json").read_text())["training_job"] == JOB
    source = s3.get_object(Bucket="bkt", Key=f"dogbreed/code/{JOB}/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source)) as tar:
        names = set(tar.getnames())
    assert {
        "sagemaker_entry.py",
        "requirements.txt",
        "launch/shim.py",
        "dogbreed/train.py",
        "serve/inference.py",
    } <= names

    # Inside the job SageMaker tars SM_MODEL_DIR to the job's artifact:
    # do what it does with the shim's output.
    artifact = io.BytesIO()
    with tarfile.open(fileobj=artifact, mode="w:gz") as tar:
        for path in (job["opt_ml"] / "model").iterdir():
            tar.add(path, arcname=path.name)
    bucket, key = record["model_data"].removeprefix("s3://").split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=artifact.getvalue())

    # 2. launch.tune backend=sagemaker: a tuning job over the same estimator; its best job is reported.
    overrides = [*common, "backend=sagemaker", "tune.job_name=dogbreed-tune-1", "launch.inputs=s3://bkt/dogbreed/data/x",
                 f"paths.output_dir={tmp_path / 'tune'}"]  # fmt: skip
    best = tune.run(compose("launch_tune", overrides), overrides)
    assert best["tuning_job"] == "dogbreed-tune-1" and best["status"] == "Completed"
    described = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="dogbreed-tune-1"
    )
    ranges = described["HyperParameterTuningJobConfig"]["ParameterRanges"]
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
    sm = boto3.client("sagemaker")
    container = sm.describe_model(ModelName="dogbreed-ep")["PrimaryContainer"]
    assert container["ModelDataUrl"] == record["model_data"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")
    assert sm.describe_endpoint(EndpointName="dogbreed-ep")["EndpointStatus"] == "InService"

    # 4. invoke: moto answers with canned data, so queue what the artifact's handler computes for this
    # request.
    images = sorted((synthetic_root / "test").rglob("*.jpg"))[:2]
    body = json.dumps({"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images]})
    expected = _handler_answer(job["opt_ml"] / "model", body.encode(), "application/json")
    backend = sagemakerruntime_backends[aws["account"]][aws["region"]]
    backend.results_queue.append((expected, "application/json", "AllTraffic", ""))
    answer = deploy.predict_batch(predictor, images)
    assert answer == json.loads(expected) and len(answer["predictions"]) == 2
    assert backend.results_queue == []  # our request consumed the queued answer

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
