"""python -m launch.transform [overrides]: score a folder or S3 prefix of images on SageMaker Batch Transform.

The model is transform.model (a run directory, its model/model.tar.gz, or an s3:// URI; local files are
uploaded first), transform.training_job=NAME or transform.tuning_job=NAME (its best job), served by the
PyTorch inference image as launch.deploy serves it (transform.framework_version, transform.image_uri).
transform.images is an S3 prefix (every object under it is sent), or a local folder whose images (the files
`python -m serve.predict FOLDER` scores) are uploaded first; local images over transform.max_payload_mb are
not sent, and their rows say so. Each image is one request (application/x-image, Accept: application/json)
to the model's code/inference.py, on transform.instance_count x transform.instance_type, at most
transform.max_concurrent_transforms at a time per instance; each answer lands as <image key>.out under
transform.output_path. With launch.wait=true (for at most launch.timeouts.transform_s) the answers are merged
into <paths.output_dir>/<transform.out> (predictions.csv or .jsonl): one row per image, the columns of
`python -m serve.predict --out` (path, label, probability, top_k, error). --attach NAME
(transform.attach=NAME) waits for an existing job and merges its answers (rows then name S3 objects).
Prints transform_job=NAME (and predictions=FILE, images=N, errors=M); a record goes to
<paths.output_dir>/launch.json. Exit status 1 when the job did not complete or any image has an error row, 2
for a setting it refuses (one error: line naming the key).
launch.sdk picks the SageMaker Python SDK (auto|v2|v3).

    python -m launch.transform transform.model=outputs/2025-01-01_12-00-00 transform.images=photos \\
        launch.wait=true
    python -m launch.transform transform.training_job=dogbreed-2025-01-01-12-00-00-000 \\
        transform.images=s3://my-bucket/photos/ transform.instance_count=4
    python -m launch.transform --attach dogbreed-transform-2025-01-01-12-00-00-000
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR, ConfigError
from launch.cli import run_main, user_errors, write_json
from launch.job import Transform, checked_name
from launch.model import model_spec
from launch.sdk.common import create_model, start_transform
from launch.session import Session, console_url, make_session, s3_uri, timeout_s, wait_until
from launch.transform_merge import Inputs, merge, split_uri

log = logging.getLogger("launch.transform")
# Any image format: the handler tells JPEG, PNG, WebP, … apart by their bytes, and a job has one ContentType.
CONTENT_TYPE = "application/x-image"
ACCEPT = "application/json"
MAX_PAYLOAD_MB = 100  # SageMaker's cap on MaxPayloadInMB, and on MaxConcurrentTransforms x MaxPayloadInMB


def check_sizes(t: DictConfig) -> None:
    """transform.instance_count, max_concurrent_transforms and max_payload_mb within SageMaker's limits."""
    count, concurrent, payload = (
        int(t[k]) for k in ("instance_count", "max_concurrent_transforms", "max_payload_mb")
    )
    if count < 1 or concurrent < 1:
        raise ConfigError(
            f"transform.instance_count={count} and transform.max_concurrent_transforms={concurrent} "
            "must be >= 1"
        )
    if not 1 <= payload <= MAX_PAYLOAD_MB:
        raise ConfigError(
            f"transform.max_payload_mb={payload} must be 1-{MAX_PAYLOAD_MB} (SageMaker's MaxPayloadInMB)"
        )
    if concurrent * payload > MAX_PAYLOAD_MB:
        raise ConfigError(
            f"transform.max_concurrent_transforms x transform.max_payload_mb = {concurrent} x {payload} MB "
            f"is over SageMaker's {MAX_PAYLOAD_MB} MB: lower one of them"
        )


def predictions_file(cfg: DictConfig) -> Path:
    """<paths.output_dir>/<transform.out>, a .csv or .jsonl name (checked before any job starts)."""
    from serve.rows import RowsError, file_format

    path = Path(cfg.paths.output_dir) / str(cfg.transform.out)
    try:
        file_format(path)
    except RowsError:
        raise ConfigError(f"transform.out={cfg.transform.out}: name it *.csv or *.jsonl") from None
    return path


def local_images(folder: str, max_payload_mb: int) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The images under ``folder`` that ``python -m serve.predict FOLDER`` would score: ({key relative to the
    folder: path}, [(path, why not sent)] for those over the payload cap)."""
    from serve.score_folder import PredictError, find_images

    if not Path(folder).is_dir():
        raise ConfigError(
            f"transform.images={folder}: no such folder (pass a local folder of images or an s3:// prefix)"
        )
    try:
        sources = find_images([folder])
    except PredictError as exc:
        raise ConfigError(f"transform.images: {exc}") from None
    cap = max_payload_mb * 10**6  # the stricter reading of "MB": a file under it is never refused
    send: dict[str, str] = {}
    unsent: list[tuple[str, str]] = []
    for source in sources:
        size = os.path.getsize(source.path)
        if size > cap:
            unsent.append((
                source.path,
                f"not sent: {size / 10**6:.1f} MB is over transform.max_payload_mb={max_payload_mb} "
                "(SageMaker's MaxPayloadInMB; at most 100)",
            ))  # fmt: skip
        else:
            send[Path(os.path.relpath(source.path, folder)).as_posix()] = source.path
    if not send:
        raise ConfigError(f"transform.images={folder}: every image is over transform.max_payload_mb")
    return send, unsent


def find_inputs(cfg: DictConfig, session: Session, name: str) -> Inputs:
    """transform.images as the job's input prefix; a local folder's images go under
    ``<launch.prefix>/transform/<job>/input/`` (checked here, uploaded by :func:`upload_inputs`)."""
    images = cfg.transform.get("images")
    if not images:
        raise ConfigError(
            "transform.images is not set: pass an s3:// prefix of images (transform.images=s3://bucket/photos/)"
            " or a local folder to upload (transform.images=photos)"
        )
    if str(images).startswith("s3://"):
        return Inputs(uri=str(images).rstrip("/") + "/")  # a bare prefix would also match photos2/…
    send, unsent = local_images(str(images), int(cfg.transform.max_payload_mb))
    uri = s3_uri(session.bucket(cfg.launch), cfg.launch.prefix, "transform", name, "input") + "/"
    return Inputs(uri=uri, paths=send, unsent=unsent)


def upload_inputs(session: Session, inputs: Inputs) -> None:
    """Upload a local folder's images to the job's input prefix (nothing to do for an S3 prefix)."""
    if inputs.paths is None:
        return
    bucket, prefix = split_uri(inputs.uri)
    session.upload_files({prefix + rel: Path(path) for rel, path in inputs.paths.items()}, bucket)


def transform_spec(cfg: DictConfig, session: Session, name: str, inputs: Inputs) -> Transform:
    t, launch = cfg.transform, cfg.launch
    output = t.get("output_path") or s3_uri(
        session.bucket(launch), launch.prefix, "transform", name, "output"
    )
    mb = int(t.max_payload_mb)
    return Transform(
        name=name,
        model_name=name,
        input_uri=inputs.uri,
        output_path=str(output).rstrip("/"),
        instance_type=str(t.instance_type),
        instance_count=int(t.instance_count),
        max_concurrent_transforms=int(t.max_concurrent_transforms),
        max_payload_mb=mb,
        content_type=CONTENT_TYPE,
        accept=ACCEPT,
        # TorchServe (the PyTorch inference image) refuses bodies over 6553500 bytes unless told otherwise.
        environment={"TS_MAX_REQUEST_SIZE": str(mb * 2**20)},
        tags={str(k): str(v) for k, v in (launch.get("tags") or {}).items()},
    )


def start(cfg: DictConfig, session: Session) -> tuple[str, Inputs, dict[str, Any]]:
    """CreateModel + CreateTransformJob; returns the job name, its inputs and the launch record."""
    t, launch = cfg.transform, cfg.launch
    check_sizes(t)
    name = checked_name(
        t.get("job_name") or session.sdk.unique_name(f"{launch.base_job_name}-transform"),
        "transform.job_name",
    )
    inputs = find_inputs(cfg, session, name)  # every setting is checked before anything is uploaded
    model = model_spec(cfg, "transform", session, name)
    upload_inputs(session, inputs)
    job = transform_spec(cfg, session, name, inputs)
    create_model(session, model, job.instance_type)
    start_transform(session, job)
    record = {
        "transform_job": name,
        "model": model.name,
        "model_data": model.model_data,
        "input": job.input_uri,
        "output_path": job.output_path,
        "unsent": inputs.unsent,
    }
    print(f"transform_job={name}", flush=True)
    print(f"model_data={model.model_data}", flush=True)
    print(f"input={job.input_uri} output={job.output_path}", flush=True)
    for path, why in inputs.unsent:
        print(f"{path}: {why}", file=sys.stderr, flush=True)
    return name, inputs, record


def run(cfg: DictConfig) -> dict[str, Any]:
    """Start a transform job (or attach to one); with launch.wait (or attach), wait and merge its answers.
    Returns the launch record."""
    t, launch = cfg.transform, cfg.launch
    out = predictions_file(cfg)
    session = make_session(launch)
    if t.get("attach"):
        name = str(t.attach)
        desc = session.client.describe_transform_job(TransformJobName=name)
        inputs = Inputs(uri=desc["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
        record: dict[str, Any] = {"transform_job": name}
        print(f"transform_job={name}", flush=True)
    else:
        name, inputs, record = start(cfg, session)
    record.update(region=session.region, console=console_url(session.region, "transform-jobs", name))
    print(f"Follow it at {record['console']}", flush=True)
    if launch.wait or t.get("attach"):
        desc = wait_until(
            lambda: session.client.describe_transform_job(TransformJobName=name),
            "TransformJobStatus",
            f"Transform job {name}",
            float(launch.poll_s),
            timeout_s=timeout_s(cfg, "transform"),
            timeout_key="launch.timeouts.transform_s",
        )
        status = desc["TransformJobStatus"]
        stopped = (
            None if status == "Completed" else f"{status}: {desc.get('FailureReason') or 'no reason given'}"
        )
        merged = merge(session.s3, inputs, desc["TransformOutput"]["S3OutputPath"], out, stopped)
        record.update(status=status, failure=stopped, predictions=str(merged.path))
        record.update(images=merged.images, errors=merged.errors)
        print(f"predictions={merged.path}", flush=True)
        print(f"images={merged.images} errors={merged.errors}", flush=True)
    write_json(Path(cfg.paths.output_dir) / "launch.json", record)
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="launch_transform")
def main(cfg: DictConfig) -> None:
    with user_errors():
        record = run(cfg)
    if record.get("failure"):
        print(f"error: transform job {record['transform_job']} ended {record['failure']}", file=sys.stderr)
        raise SystemExit(1)
    if record.get("errors"):
        raise SystemExit(1)


if __name__ == "__main__":
    run_main(main, {"--attach": ("transform.attach", True)})
