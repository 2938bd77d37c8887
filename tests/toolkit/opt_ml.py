"""What the SageMaker platform does before a training container starts, done from the job's own request.

Given the ``CreateTrainingJob`` parameters the launcher sent (captured from its boto client) and the S3
that holds the job's inputs (moto_server), :func:`lay_out` fills ``$SAGEMAKER_BASE_DIR`` (a relocated
``/opt/ml``) the way the platform does: ``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``
(the hyperparameters verbatim, JSON strings as the SDK stored them; this machine's hostname as the only
host, because the PyTorch toolkit waits until every host resolves), every channel's S3 prefix downloaded
to ``input/data/<channel>/``, empty ``model/`` and ``output/data/``. :func:`container_env` is the
environment the platform and the image give the container. Not reproduced: Debugger/Profiler sidecars and
their ``debughookconfig.json`` (AWS runs those rules in its own containers).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The PyTorch training image's Dockerfile sets this; sagemaker-training's `train` imports it.
PYTORCH_TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
GROUP = "homogeneousCluster"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def _download_prefix(s3, uri: str, dest: Path) -> int:
    """Copy every object under ``uri`` (an S3Prefix channel) to ``dest``, keeping relative keys."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix) :].lstrip("/") or Path(obj["Key"]).name
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    if not count:
        raise AssertionError(f"channel {uri} is empty in S3: the platform would fail the job")
    return count


def resource_config(request: Mapping[str, Any], host: str | None = None) -> dict[str, Any]:
    """``resourceconfig.json`` for a single-instance job on this machine."""
    host = host or socket.gethostname()
    instance_type = request["ResourceConfig"]["InstanceType"]
    return {
        "current_host": host,
        "current_instance_type": instance_type,
        "current_group_name": GROUP,
        "hosts": [host],
        "instance_groups": [{"instance_group_name": GROUP, "instance_type": instance_type, "hosts": [host]}],
        "network_interface_name": "lo",
    }


def lay_out(base: Path, request: Mapping[str, Any], s3) -> Path:
    """Fill ``base`` (``$SAGEMAKER_BASE_DIR``) from ``request``; returns ``base``."""
    if request["ResourceConfig"].get("InstanceCount", 1) != 1:
        raise ValueError("only single-instance jobs are laid out here (resourceconfig lists one host)")
    config = base / "input" / "config"
    _write_json(config / "hyperparameters.json", dict(request.get("HyperParameters") or {}))
    channels = request.get("InputDataConfig") or []
    mode = request["AlgorithmSpecification"].get("TrainingInputMode", "File")
    _write_json(
        config / "inputdataconfig.json",
        {
            c["ChannelName"]: {
                "TrainingInputMode": c.get("InputMode", mode),
                "S3DistributionType": c["DataSource"]["S3DataSource"].get(
                    "S3DataDistributionType", "FullyReplicated"
                ),
                "RecordWrapperType": c.get("RecordWrapperType", "None"),
                **({"ContentType": c["ContentType"]} if c.get("ContentType") else {}),
            }
            for c in channels
        },
    )
    _write_json(config / "resourceconfig.json", resource_config(request))
    for channel in channels:
        source = channel["DataSource"]["S3DataSource"]
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise ValueError(f"channel {channel['ChannelName']}: only S3Prefix channels are laid out here")
        _download_prefix(s3, source["S3Uri"], base / "input" / "data" / channel["ChannelName"])
    for folder in ("model", "output/data", "code"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    return base


def container_env(request: Mapping[str, Any], base: Path | None, region: str) -> dict[str, str]:
    """The variables the platform (job name, the request's Environment, region) and the PyTorch image
    (``SAGEMAKER_TRAINING_MODULE``) set; with ``base``, ``SAGEMAKER_BASE_DIR`` relocates ``/opt/ml``."""
    name = request["TrainingJobName"]
    return {
        **dict(request.get("Environment") or {}),
        "TRAINING_JOB_NAME": name,
        "TRAINING_JOB_ARN": f"arn:aws:sagemaker:{region}:123456789012:training-job/{name}",
        "AWS_REGION": region,
        "SAGEMAKER_TRAINING_MODULE": PYTORCH_TRAINING_MODULE,
        **({"SAGEMAKER_BASE_DIR": str(base)} if base is not None else {}),
    }


# Inside a private mount namespace: /opt becomes a tmpfs holding bind mounts of the host's /opt entries
# (pip's local indexes live there) plus ml -> $BASE. Nothing outside the namespace sees any of it.
_MOUNT_OPT_ML = r"""
set -e
host_opt="$1"; base="$2"; shift 2
mkdir -p "$host_opt"
mount --rbind /opt "$host_opt"
mount -t tmpfs tmpfs /opt
for entry in "$host_opt"/* "$host_opt"/.[!.]*; do
  name="${entry##*/}"
  { [ -e "$entry" ] && [ "$name" != ml ]; } || continue
  if [ -d "$entry" ]; then mkdir "/opt/$name"; else touch "/opt/$name"; fi
  mount --rbind "$entry" "/opt/$name"
done
mkdir /opt/ml
mount --bind "$base" /opt/ml
exec "$@"
"""


def at_opt_ml(base: Path, command: list[str]) -> list[str]:
    """``command`` run where ``/opt/ml`` is ``base``: for runners that hard-code ``/opt/ml`` (SDK v3's
    ``sm_train.sh`` and drivers). Root gets a mount namespace; anyone else also a user namespace in which
    they are root (``unshare --map-root-user``; needs unprivileged user namespaces)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    host_opt = base.parent / f"{base.name}.host-opt"
    return [
        "unshare", *user, "--mount", "--propagation", "private",
        "sh", "-c", _MOUNT_OPT_ML, "sh", str(host_opt), str(base), *command,
    ]  # fmt: skip
