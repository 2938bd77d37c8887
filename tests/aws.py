"""AWS offline for the launch tests (a helper module, no tests): moto, and exact payloads via Stubber.

``mocked_aws``: moto in-process with fake credentials in us-east-1, a bucket named ``bkt``, and a record of
any SDK telemetry request (asserted empty: the launcher opts out), for whichever SageMaker SDK is installed
(v2 in ``.venv``, v3 in ``.venv-v3``). v2 re-validates its defaults config with jsonschema on every lookup
(~20 per ``fit``); that validation is memoised per distinct config, which changes no result and keeps the
tests fast. ``stub_session``: the launcher's sessions answer SageMaker calls from a botocore Stubber.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.stub import Stubber

SDK = "v" + importlib.metadata.version("sagemaker").split(".", 1)[0]


def _quiet_v2(monkeypatch: pytest.MonkeyPatch, sent: list) -> None:
    import sagemaker.session
    import sagemaker.utils
    from sagemaker.config import validate_sagemaker_config
    from sagemaker.telemetry import telemetry_logging

    valid: set[str] = set()

    def validate_once(config: dict | None = None) -> None:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in valid:
            validate_sagemaker_config(config)
            valid.add(key)

    monkeypatch.setattr(sagemaker.utils, "validate_sagemaker_config", validate_once)
    monkeypatch.setattr(sagemaker.session, "validate_sagemaker_config", validate_once)
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))


def _quiet_v3(monkeypatch: pytest.MonkeyPatch, sent: list) -> None:
    from sagemaker.core.telemetry import telemetry_logging
    from sagemaker.core.utils.utils import SageMakerClient

    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    # v3 checks the execution role client-side with iam:SimulatePrincipalPolicy, which moto lacks.
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    SageMakerClient.reset()  # its clients are cached per boto3 session: none from an earlier test's moto


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
