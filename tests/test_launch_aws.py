"""``mocked_aws``, shared by the launch tests' ``aws`` fixtures (this module holds no tests).

moto in-process with fake credentials in us-east-1, a bucket named ``bkt``, and a record of any SDK
telemetry request (asserted empty: the launcher opts out). The SDK re-validates its defaults config with
jsonschema on every lookup (~20 per ``fit``); here that validation is memoised per distinct config,
which changes no result and keeps the tests fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    import boto3
    import sagemaker.session
    import sagemaker.utils
    from moto import mock_aws
    from sagemaker.config import validate_sagemaker_config
    from sagemaker.telemetry import telemetry_logging

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SAGEMAKER_ROLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    valid: set[str] = set()

    def validate_once(config: dict | None = None) -> None:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in valid:
            validate_sagemaker_config(config)
            valid.add(key)

    monkeypatch.setattr(sagemaker.utils, "validate_sagemaker_config", validate_once)
    monkeypatch.setattr(sagemaker.session, "validate_sagemaker_config", validate_once)
    sent: list = []
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt")
        yield {"account": "123456789012", "region": "us-east-1", "telemetry": sent}
    assert sent == [], "the SDK's telemetry request was sent"
