"""The SageMaker session, S3 locations and waiting, as every launch command uses them.

All AWS traffic goes through boto3, so ``AWS_ENDPOINT_URL`` (moto, LocalStack), ``AWS_REGION`` and the
usual credential chain apply unchanged. Telemetry: SDK v2 sends a usage request to an S3 URL after
``fit()``/``deploy()`` (with no timeout, so on a network without internet it can hang); it is opted out
here unless ``launch.telemetry=true``, through the SDK's own ``TelemetryOptOut`` setting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from omegaconf import DictConfig

from dogbreed.config import ConfigError

# We use SDK v2 on purpose (v3 has no PyTorch estimator / tuner / debugger settings): skip its notice,
# and its INFO lines about config files it did not find (set before the import, which logs them).
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
if logging.getLogger("sagemaker.config").level == logging.NOTSET:
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

import boto3  # noqa: E402
import sagemaker  # noqa: E402

log = logging.getLogger("launch")
TERMINAL = {
    "TrainingJobStatus": ("Completed", "Failed", "Stopped"),
    "HyperParameterTuningJobStatus": ("Completed", "Failed", "Stopped"),
    "EndpointStatus": ("InService", "Failed", "OutOfService"),
}


def sdk_config(telemetry: bool) -> dict[str, Any]:
    """The user's SageMaker SDK defaults (config.yaml files), with telemetry switched off unless asked for."""
    from sagemaker.config import load_sagemaker_config

    config = dict(load_sagemaker_config() or {})
    config.setdefault("SchemaVersion", "1.0")
    if not telemetry:
        sm = config.setdefault("SageMaker", {})
        sm.setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    return config


def make_session(launch: DictConfig) -> sagemaker.Session:
    """A ``sagemaker.Session`` for ``launch.region`` (or the AWS default region) and ``launch.bucket``."""
    region = launch.get("region") or boto3.Session().region_name or os.environ.get("AWS_REGION")
    if not region:
        raise ConfigError(
            "launch.region is not set and no AWS region is configured: pass launch.region=us-east-1 "
            "or set AWS_REGION"
        )
    boto_session = boto3.Session(region_name=region)
    return sagemaker.Session(
        boto_session=boto_session,
        sagemaker_config=sdk_config(bool(launch.get("telemetry", False))),
        default_bucket=launch.get("bucket") or None,
    )


def bucket(session: sagemaker.Session, launch: DictConfig) -> str:
    """``launch.bucket``, or the SDK's default bucket (``sagemaker-<region>-<account>``,
    created if missing)."""
    return launch.get("bucket") or session.default_bucket()


def s3_uri(bucket_name: str, *parts: str) -> str:
    return "s3://" + "/".join([bucket_name, *(p.strip("/") for p in parts if p and p.strip("/"))])


def resolve_role(session: sagemaker.Session, launch: DictConfig) -> str:
    """``launch.role``, or the notebook/Studio execution role when running inside SageMaker."""
    if launch.get("role"):
        return str(launch.role)
    try:
        return sagemaker.get_execution_role(session)
    except Exception:  # raised outside SageMaker notebooks, whatever the SDK version calls it
        raise ConfigError(
            "launch.role is not set: pass launch.role=arn:aws:iam::<account>:role/<SageMaker execution "
            "role> (or set SAGEMAKER_ROLE)"
        ) from None


def wait_until(
    describe: Callable[[], Mapping[str, Any]],
    status_key: str,
    what: str,
    poll_s: float,
    timeout_s: float | None = None,
    ok: Collection[str] | None = None,
) -> Mapping[str, Any]:
    """Describe until the status is terminal. Looks first and sleeps only while not done (unlike the SDK's
    waiters, which sleep before their first look), so a job that is already finished costs no wait.
    With ``ok``, a terminal status outside it raises (``check_status``)."""
    started = time.monotonic()
    while True:
        desc = describe()
        status = desc[status_key]
        if status in TERMINAL[status_key]:
            if ok is not None:
                check_status(desc, status_key, ok, what)
            return desc
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what} is still {status} after {timeout_s:.0f} s")
        log.info("%s: %s", what, status)
        time.sleep(poll_s)


def check_status(desc: Mapping[str, Any], status_key: str, ok: Collection[str], what: str) -> None:
    if desc[status_key] not in ok:
        reason = desc.get("FailureReason") or "no reason given"
        raise RuntimeError(f"{what} ended {desc[status_key]}: {reason}")


def console_url(region: str, kind: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"
