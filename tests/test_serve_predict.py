"""``python -m serve.predict`` without a local server: --model (file, folder, model.tar.gz), a SageMaker
endpoint through botocore's Stubber (exact request payload), and failures that set the exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from serve.inference import input_fn, model_fn, output_fn, predict_fn
from serve.predict import PredictError, main, payload, sagemaker_predictor


@pytest.fixture(scope="module")
def model_dir(trained_run) -> Path:
    return Path(trained_run["output_dir"]) / "model"


@pytest.fixture(scope="module")
def sample(model_dir, synthetic_root) -> tuple[Path, str]:
    """A held-out image and the label the exported model gives it (checked to be its true class)."""
    from dogbreed.predict import load_model

    predictor = load_model(model_dir / "model.pt")
    for path in sorted((synthetic_root / "test").glob("*/*.jpg")):
        if predictor.predict(path)[0].label == path.parent.name:
            return path, path.parent.name
    raise AssertionError("the trained model gets no held-out image right")


@pytest.mark.parametrize("where", ["model.pt", ".", "model.tar.gz"])
def test_local_model_prints_the_right_breed(model_dir, sample, where, capsys):
    path, truth = sample
    assert main([str(path), "--model", str(model_dir / where), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}: {truth} ") and lines[0].endswith("%")
    assert len(lines) == 3 and lines[1].split()[-1] == truth


def test_json_output_and_failures_set_the_exit_status(model_dir, sample, tmp_path, capsys):
    path, truth = sample
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert (
        main([str(path), str(broken), str(tmp_path / "missing.jpg"), "--model", str(model_dir), "--json"])
        == 1
    )
    out, err = capsys.readouterr()
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["image"] == str(path) and record["label"] == truth and len(record["top_k"]) == 4
    assert (
        f"{broken}: file: image data is truncated" in err
        and f"{tmp_path / 'missing.jpg'}: cannot read" in err
    )


def test_unreachable_endpoint_and_missing_model_fail_clearly(sample, tmp_path, capsys):
    path, _ = sample
    assert main([str(path), "--endpoint", "http://127.0.0.1:9/", "--timeout", "5"]) == 1
    assert "cannot reach http://127.0.0.1:9/invocations" in capsys.readouterr().err
    assert main([str(path), "--model", str(tmp_path / "nope.pt")]) == 1
    assert "no such file" in capsys.readouterr().err


def sagemaker_client():
    import boto3

    return boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def test_sagemaker_endpoint_gets_the_handler_payload(model_dir, sample):
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    path, truth = sample
    image = path.read_bytes()
    # What the endpoint would answer: code/inference.py run on exactly the payload the client sends.
    answer = output_fn(
        predict_fn(input_fn(payload(image, 3).decode(), "application/json"), model_fn(str(model_dir))),
        "application/json",
    ).encode()
    client = sagemaker_client()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/json"},
            expected_params={
                "EndpointName": "dogbreed-prod",
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": payload(image, 3),
            },
        )
        prediction = sagemaker_predictor("dogbreed-prod", 3, client=client)(image)
        stub.assert_no_pending_responses()
    assert prediction["label"] == truth and len(prediction["top_k"]) == 3


def test_sagemaker_model_error_carries_the_handler_message(sample):
    from botocore.stub import Stubber

    client = sagemaker_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message="Received client error (400)",
            http_status_code=424,
            modeled_fields={
                "OriginalStatusCode": 400,
                "OriginalMessage": '{"error": "body is not an image"}',
            },
        )
        with pytest.raises(PredictError, match=r"ModelError 400: \{\"error\": \"body is not an image\"\}"):
            sagemaker_predictor("dogbreed-prod", 5, client=client)(sample[0].read_bytes())
