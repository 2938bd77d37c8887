"""launch.transform (SageMaker Batch Transform), under whichever SDK is installed (``make test-v3`` runs it
under v3): the exact CreateModel / CreateTransformJob payloads, a local folder uploaded, waited for and merged
on moto (the platform's part, one ``.out`` answer per image, is played by ``aws.transform_platform``),
``--attach``, and the settings refused before anything is sent. The merge of answers the real
``code/inference.py`` gives is in tests/test_launch_transform_inference.py (it needs torch, which the v3 lane
does not install)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from aws import stub_session, transform_platform
from botocore.stub import Stubber

from dogbreed.config import ConfigError, compose

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
ARN = "arn:aws:sagemaker:us-east-1:123456789012:transform-job/tf-1"


def answer_for(label: str) -> bytes:
    """What code/inference.py answers for one image (``{"predictions": [one entry]}``)."""
    top = [{"label": label, "probability": 0.75}, {"label": "other", "probability": 0.25}]
    return json.dumps({"predictions": [{"label": label, "probability": 0.75, "top_k": top}]}).encode()


def canned(body: bytes) -> bytes | None:
    """A stand-in container: ``label:<name>`` bodies are classified as <name>, ``refuse`` gets the handler's
    refusal (Batch Transform: 200 ``{"error"}``), anything else an error status."""
    if body.startswith(b"label:"):
        return answer_for(body.removeprefix(b"label:").decode())
    if body == b"refuse":
        return json.dumps({"error": "could not decode the image"}).encode()
    return None


def model_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in ("model.pt", "code/inference.py"):
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def transform_request(**changes: object) -> dict:
    request = {
        "TransformJobName": "tf-1",
        "ModelName": "tf-1",
        "MaxConcurrentTransforms": 4,
        "MaxPayloadInMB": 10,
        "BatchStrategy": "SingleRecord",
        "Environment": {"TS_MAX_REQUEST_SIZE": str(10 * 2**20)},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/photos/"}},
            "ContentType": "application/x-image",
            "SplitType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": "s3://bkt/dogbreed/transform/tf-1/output",
            "Accept": "application/json",
            "AssembleWith": "None",
        },
        "TransformResources": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 3},
        "Tags": [{"Key": "team", "Value": "dogs"}],
    }
    request.update(changes)
    return request


def test_create_model_and_transform_job_payloads(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One image per request (SingleRecord, no splitting), x-image in, JSON out, the TorchServe body limit
    raised to the payload cap, the same CreateModel as launch.deploy's; without launch.wait nothing is
    waited for."""
    from launch import transform

    def plan(stubber: Stubber) -> None:
        container = {"Image": INFERENCE_IMAGE, "ModelDataUrl": "s3://bkt/m/model.tar.gz", "Environment": ENV}
        stubber.add_response(
            "create_model",
            {"ModelArn": ARN},
            {"ModelName": "tf-1", "ExecutionRoleArn": ROLE, "PrimaryContainer": container},
        )
        stubber.add_response("create_transform_job", {"TransformJobArn": ARN}, transform_request())

    made = stub_session(transform, monkeypatch, plan)
    overrides = [
        f"launch.role={ROLE}",
        "launch.bucket=bkt",
        "+launch.tags.team=dogs",
        "transform.model=s3://bkt/m/model.tar.gz",
        "transform.images=s3://bkt/photos",  # a bare prefix: "/" is added (photos2/ is not sent)
        "transform.job_name=tf-1",
        "transform.instance_type=ml.c5.xlarge",
        "transform.instance_count=3",
        f"paths.output_dir={tmp_path}",
    ]
    record = transform.run(compose("launch_transform", overrides))
    made["stubber"].assert_no_pending_responses()
    out = capsys.readouterr().out
    assert "transform_job=tf-1\n" in out and "model_data=s3://bkt/m/model.tar.gz\n" in out
    assert "input=s3://bkt/photos/ output=s3://bkt/dogbreed/transform/tf-1/output\n" in out
    assert "predictions=" not in out and "status" not in record
    assert json.loads((tmp_path / "launch.json").read_text())["transform_job"] == "tf-1"


def test_tags_follow_with_add_tags_where_the_sdk_cannot_send_them(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SDK v3 before sagemaker-core 2.18 fails after a CreateTransformJob with Tags (its issue #6090): the
    job is then created without them and tagged right after."""
    import dataclasses

    from launch import transform
    from launch.sdk import adapter

    sdk = adapter("auto")
    monkeypatch.setattr(sdk, "HELPERS", dataclasses.replace(sdk.HELPERS, transform_tags_on_create=False))

    def plan(stubber: Stubber) -> None:
        stubber.add_response("create_model", {"ModelArn": ARN})
        request = transform_request()
        del request["Tags"]
        stubber.add_response("create_transform_job", {"TransformJobArn": ARN}, request)
        described = {**request, "TransformJobArn": ARN, "TransformJobStatus": "InProgress", "CreationTime": 0}
        stubber.add_response("describe_transform_job", described, {"TransformJobName": "tf-1"})
        tags = [{"Key": "team", "Value": "dogs"}]
        stubber.add_response("add_tags", {"Tags": tags}, {"ResourceArn": ARN, "Tags": tags})

    made = stub_session(transform, monkeypatch, plan)
    overrides = [f"launch.role={ROLE}", "launch.bucket=bkt", "+launch.tags.team=dogs",
                 "transform.job_name=tf-1", "transform.model=s3://bkt/m/model.tar.gz", "transform.images=s3://bkt/photos/",
                 "transform.instance_type=ml.c5.xlarge", "transform.instance_count=3",
                 f"paths.output_dir={tmp_path}"]  # fmt: skip
    transform.run(compose("launch_transform", overrides))
    made["stubber"].assert_no_pending_responses()


def test_a_local_folder_is_uploaded_waited_for_and_merged(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Rows name the local files, in the order serve.predict scores them; an image over the payload cap is
    not sent, one the handler refused and one without an answer are error rows; the exit status says so."""
    import boto3

    from launch import transform

    photos = tmp_path / "photos"
    for rel, body in {
        "a/1.jpg": b"label:husky",
        "a/2.png": b"refuse",
        "b/3.jpeg": b"label:pug",
        "b/4.jpg": b"crash",
        "b/huge.jpg": b"label:x" + b"\0" * 1_100_000,
        "b/notes.txt": b"not an image",
    }.items():
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(body)
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    model_archive(run_dir / "model" / "model.tar.gz")

    real_start = transform.start_transform

    def start_and_run(session, job) -> None:
        real_start(session, job)
        transform_platform(
            job.name, canned
        )  # moto completes the job at once; the answers are the platform's part

    monkeypatch.setattr(transform, "start_transform", start_and_run)
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail(f"a test waited {s} s"))
    argv = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.wait=true", f"transform.model={run_dir}",
            f"transform.images={photos}", "transform.job_name=tf-local", "transform.max_payload_mb=1",
            "transform.out=predictions.jsonl", f"paths.output_dir={tmp_path / 'out'}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["launch.transform", *argv])
    with pytest.raises(SystemExit) as exited:
        transform.main()
    assert exited.value.code == 1  # two images have error rows
    out, err = capsys.readouterr()
    predictions = tmp_path / "out" / "predictions.jsonl"
    assert f"predictions={predictions}\n" in out and "images=5 errors=3\n" in out
    assert "huge.jpg: not sent: 1.1 MB is over transform.max_payload_mb=1" in err

    rows = {Path(r["path"]).relative_to(photos).as_posix(): r for r in map(json.loads, predictions.open())}
    assert list(rows) == ["b/huge.jpg", "a/1.jpg", "a/2.png", "b/3.jpeg", "b/4.jpg"]
    assert set(rows["a/1.jpg"]) == {"path", "label", "probability", "top_k", "error"}
    assert (rows["a/1.jpg"]["label"], rows["b/3.jpeg"]["label"]) == ("husky", "pug")
    assert rows["a/1.jpg"]["top_k"][1] == {"label": "other", "probability": 0.25}
    assert rows["a/2.png"]["error"] == "could not decode the image"
    assert rows["b/4.jpg"]["error"].startswith(
        "no answer in the transform job's output (s3://bkt/dogbreed/transform/tf-local/output/b/4.jpg.out)"
    )
    assert "not sent" in rows["b/huge.jpg"]["error"]

    s3 = boto3.client("s3")
    sent = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket="bkt", Prefix="dogbreed/transform/tf-local/input/")["Contents"]
    }
    assert sent == {
        f"dogbreed/transform/tf-local/input/{k}" for k in ("a/1.jpg", "a/2.png", "b/3.jpeg", "b/4.jpg")
    }
    model = boto3.client("sagemaker").describe_model(ModelName="tf-local")["PrimaryContainer"]
    assert model["ModelDataUrl"] == "s3://bkt/dogbreed/models/tf-local/model.tar.gz"
    record = json.loads((tmp_path / "out" / "launch.json").read_text())
    assert record["status"] == "Completed" and (record["images"], record["errors"]) == (5, 3)


def test_attach_merges_an_existing_job_and_a_rerun_adds_only_new_rows(
    aws: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--attach NAME: rows name the S3 objects; merging again into the same file writes nothing twice."""
    import boto3

    from launch import transform

    s3 = boto3.client("s3")
    for key in ("photos/x.jpg", "photos/y.jpg", "photos/sub/"):
        s3.put_object(Bucket="bkt", Key=key, Body=b"label:" + key.encode() if key.endswith("jpg") else b"")
    boto3.client("sagemaker").create_transform_job(**{
        k: v for k, v in transform_request(TransformJobName="tf-2", ModelName="m").items() if k != "Tags"
    })  # fmt: skip
    transform_platform("tf-2", canned)
    overrides = [
        "transform.attach=tf-2",
        "launch.poll_s=30",
        "launch.bucket=bkt",
        f"paths.output_dir={tmp_path}",
    ]
    cfg = compose("launch_transform", overrides)
    first = transform.run(cfg)
    assert (first["status"], first["images"], first["errors"]) == ("Completed", 2, 0)
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "path,label,probability,top_k,error"
    assert lines[1].startswith("s3://bkt/photos/x.jpg,photos/x.jpg,0.75,")
    again = transform.run(cfg)
    assert again["images"] == 2 and (tmp_path / "predictions.csv").read_text().splitlines() == lines
    assert "transform_job=tf-2\n" in capsys.readouterr().out


MODEL, IMAGES = "transform.model=s3://b/m.tar.gz", "transform.images=s3://bkt/p/"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([MODEL], r"transform\.images is not set"),
        ([IMAGES], r"set exactly one of transform\.model .* \(got none\)"),
        ([MODEL, IMAGES, "transform.training_job=j"], r"\(got \['model', 'training_job'\]\)"),
        (
            [MODEL, IMAGES, "transform.out=p.parquet"],
            r"transform\.out=p\.parquet: name it \*\.csv or \*\.jsonl",
        ),
        ([MODEL, IMAGES, "transform.max_payload_mb=101"], r"transform\.max_payload_mb=101 must be 1-100"),
        ([MODEL, IMAGES, "transform.max_concurrent_transforms=20"], r"20 x 10 MB is over SageMaker's 100 MB"),
        ([MODEL, IMAGES, "transform.instance_count=0"], r"transform\.instance_count=0 .* must be >= 1"),
        ([MODEL, IMAGES, "transform.job_name=bad_name"], r"transform\.job_name='bad_name' must be 1-63"),
        ([MODEL, "transform.images=/no/such/dir"], r"transform\.images=/no/such/dir: no such folder"),
        (["transform.model=/no/run", IMAGES], r"transform\.model: /no/run does not exist"),
    ],
)
def test_settings_are_refused_with_the_key_before_anything_is_sent(
    aws: dict, tmp_path: Path, overrides: list[str], message: str
) -> None:
    import boto3

    from launch import transform

    base = [f"launch.role={ROLE}", "launch.bucket=bkt", f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=message):
        transform.run(compose("launch_transform", base + overrides))
    sm = boto3.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_transform_jobs()["TransformJobSummaries"] == []
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="bkt")


def test_a_user_error_is_one_line_and_exit_2(
    aws: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from launch import transform

    monkeypatch.setattr(
        sys, "argv", ["launch.transform", "transform.model=s3://b/m.tar.gz", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(SystemExit) as exited:
        transform.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: transform.images is not set") and err.count("\n") == 1
