"""python -m launch.train [overrides]: run dogbreed.train as a SageMaker training job.

Training overrides (model.lr=0.01, model=resnet18, experiment=demo, ...) become the job's hyperparameters;
launch.* keys configure the job: launch.sdk (auto|v2|v3), launch.role, launch.bucket, launch.inputs (S3
prefix or local folder to upload), launch.instance_type, launch.instance_count (>1: torch_distributed),
launch.use_spot, launch.wait, launch.timeouts.training_s, launch.debugger.builtin_rules (AWS's own Debugger,
off by default), launch.debugger.*, launch.profiler.* (see conf/launch/default.yaml). Prints
training_job=NAME; with launch.wait=true also the job's final metrics and model artifact. A record of
the launch goes to <paths.output_dir>/launch.json.

    python -m launch.train launch.role=arn:aws:iam::123456789012:role/SageMaker \\
        launch.inputs=data/dogImages model.lr=3e-3 launch.use_spot=true launch.wait=true
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR, validate
from launch.cli import run_main, task_overrides, user_errors, write_json
from launch.job import explained_rejection, job_extras, job_name, training_job
from launch.session import TERMINAL, Session, console_url, make_session, timeout_s, wait_until
from launch.source import staged_source

log = logging.getLogger("launch.train")


def wait_for_training(session: Session, name: str, cfg: DictConfig) -> dict[str, Any]:
    """Follow the job to its end (CloudWatch logs when ``launch.logs``), for at most
    ``launch.timeouts.training_s``, and return its description."""
    launch = cfg.launch
    limit = timeout_s(cfg, "training")
    deadline = time.monotonic() + limit
    desc = session.client.describe_training_job(TrainingJobName=name)
    if desc["TrainingJobStatus"] not in TERMINAL["TrainingJobStatus"] and launch.get("logs", True):
        session.sdk.follow_logs(session, name, float(launch.poll_s), limit)
    desc = wait_until(
        lambda: session.client.describe_training_job(TrainingJobName=name),
        "TrainingJobStatus",
        f"Training job {name}",
        float(launch.poll_s),
        timeout_s=max(0.0, deadline - time.monotonic()),
        timeout_key="launch.timeouts.training_s",
        ok=("Completed",),
    )
    return dict(desc)


def run(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """Create the training job for the composed ``cfg`` and CLI ``overrides``; returns the launch record."""
    validate(cfg)
    launch = cfg.launch
    session = make_session(launch)
    name = job_name(session, launch)
    with staged_source(job_extras(session, cfg)) as source:
        job = training_job(cfg, session, overrides, source, name)
        with explained_rejection(job):
            session.sdk.start_training(session, job)
    record: dict[str, Any] = {
        "training_job": name,
        "region": session.region,
        "console": console_url(session.region, "jobs", name),
        "hyperparameters": job.hyperparameters,
        "inputs": job.channels or None,
        "output_path": job.output_path,
        "checkpoint_s3_uri": job.checkpoint_s3_uri,
    }
    print(f"training_job={name}", flush=True)
    print(f"Follow it at {record['console']}", flush=True)
    if launch.wait:
        desc = wait_for_training(session, name, cfg)
        record["status"] = desc["TrainingJobStatus"]
        record["model_data"] = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        record["metrics"] = {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}
        for key, value in record["metrics"].items():
            print(f"{key}={value}", flush=True)
        print(f"model_data={record['model_data']}", flush=True)
    write_json(Path(cfg.paths.output_dir) / "launch.json", record)
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="launch_train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg, task_overrides())


if __name__ == "__main__":
    run_main(main)
