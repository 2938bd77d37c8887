"""python -m launch.deploy [overrides]: put a trained model behind a SageMaker endpoint, or tear one down.

The model is one of: deploy.model (a run directory, its model/model.tar.gz, or an s3:// URI; local files
are uploaded first), deploy.training_job=NAME (that job's artifact), deploy.tuning_job=NAME (its best
job's artifact). model.tar.gz already holds model.pt and code/inference.py, so it is served as is by the
PyTorch inference image (deploy.framework_version, default 2.6.0/py312). deploy.instance_type and
deploy.instance_count size it; deploy.serverless.enabled=true makes a serverless endpoint instead.
deploy.images=[a.jpg,b.png] sends images once it is InService (one image/jpeg|png request each, or one
application/json batch with deploy.batch=true) and prints the top breeds; waiting stops after
launch.timeouts.endpoint_s. --delete (deploy.delete=true) removes deploy.endpoint_name, then its endpoint
config, then its model(s), and exits non-zero naming whatever it could not delete. launch.sdk picks the
SageMaker Python SDK (auto|v2|v3).

    python -m launch.deploy deploy.model=outputs/2025-01-01_12-00-00 deploy.images=[dog.jpg]
    python -m launch.deploy --delete deploy.endpoint_name=dogbreed-endpoint-2025-01-01-12-00-00-000
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR, ConfigError
from launch.cli import run_main, user_errors, write_json
from launch.job import Endpoint
from launch.model import model_spec
from launch.sdk.common import create_endpoint, create_model
from launch.session import Session, console_url, make_session, timeout_s, wait_until

log = logging.getLogger("launch.deploy")
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class Predictor:
    """Sends requests to an endpoint and reads its JSON answers (``InvokeEndpoint``, the same under both
    SDKs)."""

    def __init__(self, session: Session, endpoint_name: str) -> None:
        self.endpoint_name = endpoint_name
        self.runtime = session.native.sagemaker_runtime_client

    def predict(self, body: bytes, content_type: str) -> dict[str, Any]:
        answer = self.runtime.invoke_endpoint(
            EndpointName=self.endpoint_name, Body=body, ContentType=content_type, Accept="application/json"
        )
        return json.loads(answer["Body"].read())


def predict_file(predictor: Predictor, path: str | Path) -> dict[str, Any]:
    """Send one image file (image/jpeg or image/png by its suffix) and return the decoded JSON answer."""
    path = Path(path)
    return predictor.predict(path.read_bytes(), CONTENT_TYPES.get(path.suffix.lower(), "image/jpeg"))


def predict_batch(predictor: Predictor, paths: Sequence[str | Path]) -> dict[str, Any]:
    """Send several image files in one ``application/json`` request (``{"instances": [{"b64": …}]}``)."""
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]}
    )
    return predictor.predict(body.encode(), "application/json")


def endpoint_spec(cfg: DictConfig, name: str) -> Endpoint:
    d = cfg.deploy
    if d.serverless.enabled:
        serverless = (int(d.serverless.memory_size_in_mb), int(d.serverless.max_concurrency))
        return Endpoint(name=name, instance_type=None, instance_count=None, serverless=serverless)
    return Endpoint(name=name, instance_type=str(d.instance_type), instance_count=int(d.instance_count))


def deploy(cfg: DictConfig) -> Predictor:
    """Create model, endpoint config and endpoint; wait for InService (deploy.wait); return the predictor."""
    d, launch = cfg.deploy, cfg.launch
    session = make_session(launch)
    name = d.get("endpoint_name") or session.sdk.unique_name(f"{launch.base_job_name}-endpoint")
    model, endpoint = model_spec(cfg, "deploy", session, name), endpoint_spec(cfg, name)
    create_model(session, model, endpoint.instance_type)
    create_endpoint(session, model.name, endpoint)
    print(f"endpoint={name}", flush=True)
    print(f"model_data={model.model_data}", flush=True)
    print(f"Follow it at {console_url(session.region, 'endpoints', name)}", flush=True)
    if d.wait:
        wait_until(
            lambda: session.client.describe_endpoint(EndpointName=name),
            "EndpointStatus",
            f"Endpoint {name}",
            float(launch.poll_s),
            timeout_s=timeout_s(cfg, "endpoint"),
            timeout_key="launch.timeouts.endpoint_s",
            ok=("InService",),
        )
    write_json(
        Path(cfg.paths.output_dir) / "endpoint.json",
        {"endpoint": name, "model_data": model.model_data, "region": session.region},
    )
    return Predictor(session, name)


def _missing(exc: Exception) -> bool:
    """A ClientError that says the resource does not exist (already deleted)."""
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", exc))
    return "could not find" in message.lower() or "does not exist" in message.lower()


def delete(cfg: DictConfig) -> str:
    """Delete ``deploy.endpoint_name``: the endpoint first, then its endpoint config, then its model(s).

    Each step is reported; a resource that is already gone counts as deleted. If the endpoint itself cannot
    be deleted its config and models are kept (they serve it). Exits non-zero naming what remains."""
    from botocore.exceptions import ClientError

    name = cfg.deploy.get("endpoint_name")
    if not name:
        raise ConfigError("--delete needs deploy.endpoint_name=NAME (printed as endpoint=… by launch.deploy)")
    name = str(name)
    client = make_session(cfg.launch).client
    config_name, models = name, [name]  # launch.deploy names all three after the endpoint
    try:
        config_name = client.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        variants = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
        models = list(dict.fromkeys(v["ModelName"] for v in variants))
    except ClientError as exc:
        if not _missing(exc):
            raise
    steps = [
        ("endpoint", name, lambda: client.delete_endpoint(EndpointName=name)),
        (
            "endpoint_config",
            config_name,
            lambda: client.delete_endpoint_config(EndpointConfigName=config_name),
        ),
    ]
    steps += [("model", m, lambda m=m: client.delete_model(ModelName=m)) for m in models]  # fmt: skip
    remaining: list[str] = []
    for kind, resource, call in steps:
        if remaining and remaining[0].startswith("endpoint="):  # it still stands: keep what it serves from
            remaining.append(f"{kind}={resource} (kept: the endpoint still uses it)")
            continue
        try:
            call()
            print(f"deleted {kind}={resource}", flush=True)
        except ClientError as exc:
            if _missing(exc):
                print(f"deleted {kind}={resource} (already gone)", flush=True)
            else:
                remaining.append(f"{kind}={resource} ({exc.response.get('Error', {}).get('Message', exc)})")
    if remaining:
        for line in remaining:
            print(f"could not delete {line}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return name


def run(cfg: DictConfig) -> Any:
    """Deploy (and send ``deploy.images``), or delete with ``deploy.delete``."""
    if cfg.deploy.delete:
        return delete(cfg)
    predictor = deploy(cfg)
    images = list(cfg.deploy.get("images") or [])
    if images and cfg.deploy.get("batch"):
        predictions = predict_batch(predictor, images)["predictions"]
    else:
        predictions = [p for image in images for p in predict_file(predictor, image)["predictions"]]
    for image, p in zip(images, predictions, strict=True):
        print(f"{image}: {p['label']} ({p['probability']:.3f})", flush=True)
    return predictor


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="launch_deploy")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_main(main, {"--delete": ("deploy.delete", False)})
