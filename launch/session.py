"""The AWS side every launch command shares: the SDK session, S3 locations, bounded waits.

All AWS traffic goes through boto3, so ``AWS_ENDPOINT_URL`` (moto, LocalStack), ``AWS_REGION`` and the
usual credential chain apply unchanged. ``Session`` wraps the chosen SDK's own session (``launch.sdk``) with
what the commands need from it; describing, waiting for, invoking and deleting resources are plain API calls
on its SageMaker client, the same under both SDKs. Telemetry: both SDKs send a usage request per
``fit``/``train``/``deploy``; it is opted out unless ``launch.telemetry=true``, through the SDKs' own
``TelemetryOptOut`` setting.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from dogbreed.config import ConfigError
from launch import sdk

log = logging.getLogger("launch")
START_UP_S = 3600  # what a wait allows beyond a job's own limit: capacity, image pull, data, upload
TERMINAL = {
    "TrainingJobStatus": ("Completed", "Failed", "Stopped"),
    "HyperParameterTuningJobStatus": ("Completed", "Failed", "Stopped"),
    "EndpointStatus": ("InService", "Failed", "OutOfService"),
    "TransformJobStatus": ("Completed", "Failed", "Stopped"),
}


class WaitTimeout(TimeoutError):
    """A wait ran out of its ``launch.timeouts`` budget; the message names the key (the resource goes on)."""


def sdk_config(telemetry: bool, loaded: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user's SageMaker SDK defaults (config.yaml files), with telemetry switched off unless asked for."""
    config = dict(loaded or {})
    config.setdefault("SchemaVersion", "1.0")
    if not telemetry:
        sm = config.setdefault("SageMaker", {})
        sm.setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    return config


def region_of(launch: DictConfig) -> str:
    import boto3

    region = launch.get("region") or boto3.Session().region_name or os.environ.get("AWS_REGION")
    if not region:
        raise ConfigError(
            "launch.region is not set and no AWS region is configured: pass launch.region=us-east-1 "
            "or set AWS_REGION"
        )
    return str(region)


@dataclass
class Session:
    """The chosen SDK adapter (``sdk``) and that SDK's own session object (``native``)."""

    sdk: ModuleType
    native: Any
    log: logging.Logger = log

    @property
    def client(self) -> Any:
        """The boto3 SageMaker client, shared with the SDK (so the tests' Stubber sees every call)."""
        return self.native.sagemaker_client

    @property
    def region(self) -> str:
        return self.native.boto_region_name

    def bucket(self, launch: DictConfig) -> str:
        """``launch.bucket``, or the SDK's default bucket (``sagemaker-<region>-<account>``, created if
        missing)."""
        return launch.get("bucket") or self.native.default_bucket()

    @property
    def s3(self) -> Any:
        """The SDK session's boto3 S3 client."""
        return self.native.s3_client

    def upload(self, path: Path, bucket: str, key_prefix: str) -> str:
        """Upload a file or folder; returns its S3 URI (the folder's prefix, or the file's key)."""
        log.info("Uploading %s to s3://%s/%s", path, bucket, key_prefix)
        return self.native.upload_data(str(path), bucket=bucket, key_prefix=key_prefix)

    def upload_files(self, files: Mapping[str, Path], bucket: str, workers: int = 8) -> None:
        """Upload each file to its key (``{key: path}``), ``workers`` at a time: many small files (images)
        take one request each, so doing them one by one is mostly waiting."""
        from concurrent.futures import ThreadPoolExecutor

        def put(key: str) -> None:
            self.s3.upload_file(str(files[key]), bucket, key)

        log.info("Uploading %d files to s3://%s", len(files), bucket)
        with ThreadPoolExecutor(workers, thread_name_prefix="upload") as pool:
            list(pool.map(put, files))  # the first failure is raised here

    def role(self, launch: DictConfig) -> str:
        """``launch.role``, or the notebook/Studio execution role when running inside SageMaker."""
        if launch.get("role"):
            return str(launch.role)
        try:
            return self.sdk.execution_role(self.native)
        except Exception:  # raised outside SageMaker notebooks, whatever the SDK version calls it
            raise ConfigError(
                "launch.role is not set: pass launch.role=arn:aws:iam::<account>:role/<SageMaker execution "
                "role> (or set SAGEMAKER_ROLE)"
            ) from None


def make_session(launch: DictConfig) -> Session:
    """A session of the SDK ``launch.sdk`` picks, for ``launch.region`` (or the AWS default region)."""
    adapter = sdk.adapter(launch.get("sdk"))
    if adapter.NAME == "v3":
        log.info("SageMaker Python SDK v3 (launch.sdk): %s", adapter.LIMITS)
    native = adapter.session(region_of(launch), launch.get("bucket") or None, bool(launch.get("telemetry")))
    return Session(sdk=adapter, native=native)


def s3_uri(bucket_name: str, *parts: str) -> str:
    return "s3://" + "/".join([bucket_name, *(p.strip("/") for p in parts if p and p.strip("/"))])


def wait_until(
    describe: Callable[[], Mapping[str, Any]],
    status_key: str,
    what: str,
    poll_s: float,
    timeout_s: float,
    timeout_key: str,
    ok: Collection[str] | None = None,
) -> Mapping[str, Any]:
    """Describe until the status is terminal, for at most ``timeout_s`` (config key ``timeout_key``).

    Looks first and sleeps only while not done (unlike the SDK's waiters, which sleep before their first
    look), so a job that is already finished costs no wait. With ``ok``, a terminal status outside it raises.
    """
    started = time.monotonic()
    while True:
        desc = describe()
        status = desc[status_key]
        if status in TERMINAL[status_key]:
            if ok is not None:
                check_status(desc, status_key, ok, what)
            return desc
        waited = time.monotonic() - started
        if waited + poll_s > timeout_s:
            raise WaitTimeout(
                f"{what} is still {status} after {waited:.0f} s, and {timeout_key}={timeout_s:.0f} s allows "
                f"no further wait; it keeps running on AWS: raise {timeout_key} to wait longer"
            )
        log.info("%s: %s", what, status)
        time.sleep(poll_s)


def timeout_s(cfg: DictConfig, kind: str) -> float:
    """``launch.timeouts.<kind>_s`` (training, tuning, endpoint); null = derived from the jobs' own limits."""
    launch = cfg.launch
    value = (launch.get("timeouts") or {}).get(f"{kind}_s")
    if value is not None:
        if value <= 0:
            raise ConfigError(f"launch.timeouts.{kind}_s={value} must be > 0 seconds")
        return float(value)
    job_limit = launch.get("max_wait") or (2 * launch.max_run if launch.use_spot else launch.max_run)
    if kind == "training":
        return float(job_limit + START_UP_S)
    if kind == "tuning":
        tune = cfg.tune
        if tune.get("max_runtime_s"):
            return float(tune.max_runtime_s + START_UP_S)
        from launch.space import build_space, grid_size

        jobs = tune.get("max_jobs") if tune.strategy != "Grid" else grid_size(build_space(tune.space))
        rounds = math.ceil(int(jobs) / max(1, int(tune.max_parallel_jobs)))
        return float(rounds * (job_limit + START_UP_S))
    raise ConfigError(f"launch.timeouts.{kind}_s is not set: give the wait a limit in seconds")


def check_status(desc: Mapping[str, Any], status_key: str, ok: Collection[str], what: str) -> None:
    if desc[status_key] not in ok:
        reason = desc.get("FailureReason") or "no reason given"
        raise RuntimeError(f"{what} ended {desc[status_key]}: {reason}")


def console_url(region: str, kind: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"
