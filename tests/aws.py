"""AWS offline for the launch tests (a helper module, no tests): moto, and exact payloads via Stubber.

``mocked_aws``: moto in-process with fake credentials in us-east-1, a bucket named ``bkt``, and a record of
any SDK telemetry request (asserted empty: the launcher opts out), for whichever SageMaker SDK is installed
(v2 in ``.venv``, v3 in ``.venv-v3``). Both SDKs re-validate the whole defaults config with jsonschema on
every config lookup (~20 per v2 ``fit``, ~11 per v3 training request; the launcher's telemetry opt-out makes
the config non-empty); that validation is memoised per distinct config, and one botocore loader serves every
session (each command's new boto3 session would re-parse the service models): neither changes a result, and
together they halve the launcher tests' CPU. ``stub_session``: the launcher's sessions answer SageMaker calls
from a botocore Stubber. ``staged_requirements``: the job's requirements.txt as the launcher uploaded it.
``transform_platform``: SageMaker's part of a Batch Transform job on moto (one ``.out`` answer per input).
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import botocore.loaders
import botocore.session
import pytest
from botocore.stub import Stubber

SDK = "v" + importlib.metadata.version("sagemaker").split(".", 1)[0]


def _validate_once(validate: Callable[[dict | None], None]) -> Callable[[dict | None], None]:
    """The SDK's ``validate_sagemaker_config``, run once per distinct config."""
    valid: set[str] = set()

    def once(config: dict | None = None) -> None:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in valid:
            validate(config)
            valid.add(key)

    return once


def _quiet_v2(monkeypatch: pytest.MonkeyPatch, sent: list) -> None:
    import sagemaker.session
    import sagemaker.utils
    from sagemaker.config import validate_sagemaker_config
    from sagemaker.telemetry import telemetry_logging

    once = _validate_once(validate_sagemaker_config)
    monkeypatch.setattr(sagemaker.utils, "validate_sagemaker_config", once)
    monkeypatch.setattr(sagemaker.session, "validate_sagemaker_config", once)
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))


def _quiet_v3(monkeypatch: pytest.MonkeyPatch, sent: list) -> None:
    from sagemaker.core.config.config import validate_sagemaker_config
    from sagemaker.core.config.config_manager import SageMakerConfig
    from sagemaker.core.helper import session_helper
    from sagemaker.core.telemetry import telemetry_logging
    from sagemaker.core.utils.utils import SageMakerClient

    once = _validate_once(validate_sagemaker_config)
    monkeypatch.setattr(session_helper, "validate_sagemaker_config", once)
    monkeypatch.setattr(SageMakerConfig, "validate_sagemaker_config", staticmethod(once))
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    # v3 checks the execution role client-side with iam:SimulatePrincipalPolicy, which moto lacks.
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    SageMakerClient.reset()  # its clients are cached per boto3 session: none from an earlier test's moto


@functools.cache
def _shared_loader(data_path: str | None = None) -> botocore.loaders.Loader:
    """One botocore data loader for the process: each new boto3 session (one per launch command) would
    otherwise parse the same service-model JSON again."""
    return botocore.loaders.create_loader(data_path)


@contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    import boto3
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SAGEMAKER_ROLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    sent: list = []
    (_quiet_v2 if SDK == "v2" else _quiet_v3)(monkeypatch, sent)
    monkeypatch.setattr(botocore.session, "create_loader", _shared_loader)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt")
        yield {"account": "123456789012", "region": "us-east-1", "telemetry": sent}
    assert sent == [], "the SDK's telemetry request was sent"


def stub_session(module: Any, monkeypatch: pytest.MonkeyPatch, plan: Callable[[Stubber], None]) -> dict:
    """Make ``module.make_session`` return sessions whose SageMaker client (the one the SDK uses too)
    answers from a Stubber; ``made["params"]`` records each request's parameters by operation."""
    made: dict = {"params": {}}
    real = module.make_session

    def make(launch):
        session = real(launch)
        stubber = Stubber(session.client)
        session.client.meta.events.register(
            "provide-client-params.sagemaker.*",
            lambda params, model, **_: made["params"].setdefault(model.name, []).append(params),
        )
        plan(stubber)
        stubber.activate()
        made.update(stubber=stubber, session=session)
        return session

    monkeypatch.setattr(module, "make_session", make)
    return made


def staged_requirements(bucket: str = "bkt") -> list[str]:
    """The requirements.txt of the job code uploaded to moto's ``bucket`` (v2: inside sourcedir.tar.gz; v3:
    a file of ModelTrainer's ``code`` channel)."""
    import boto3

    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for key in keys:
        if key.endswith("/code/requirements.txt"):
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        if key.endswith("/sourcedir.tar.gz"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return tar.extractfile("requirements.txt").read().decode().splitlines()
    raise AssertionError(f"no job requirements.txt in s3://{bucket}: {keys}")


def transform_platform(job_name: str, answer: Callable[[bytes], bytes | None]) -> None:
    """Play SageMaker's part of a transform job on moto: each object under the job's input prefix is one
    request to ``answer``; its answer is written to ``<output path>/<key relative to the prefix>.out``
    (None = the container answered with an error status: SageMaker writes nothing)."""
    import boto3

    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    desc = sm.describe_transform_job(TransformJobName=job_name)
    source = desc["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, prefix = source.removeprefix("s3://").split("/", 1)
    out_bucket, out_prefix = desc["TransformOutput"]["S3OutputPath"].removeprefix("s3://").split("/", 1)
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        body = answer(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        if body is not None:
            rel = obj["Key"][len(prefix) :]
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix.rstrip('/')}/{rel}.out", Body=body)
