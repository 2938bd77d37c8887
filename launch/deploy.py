"""python -m launch.deploy [overrides]: put a trained model behind a SageMaker endpoint, or tear one down.

The model is one of: deploy.model (a run directory, its model/model.tar.gz, or an s3:// URI; local files
are uploaded first), deploy.training_job=NAME (that job's artifact), deploy.tuning_job=NAME (its best
job's artifact). model.tar.gz already holds model.pt and code/inference.py, so it is served as is by the
PyTorch inference image (deploy.framework_version, default 2.6.0/py312). deploy.instance_type and
deploy.instance_count size it; deploy.serverless.enabled=true makes a serverless endpoint instead.
deploy.images=[a.jpg,b.png] sends images once it is InService (one image/jpeg|png request each, or one
application/json batch with deploy.batch=true) and prints the top breeds. --delete
(deploy.delete=true) removes deploy.endpoint_name with its endpoint config and model.

    python -m launch.deploy deploy.model=outputs/2025-01-01_12-00-00 deploy.images=[dog.jpg]
    python -m launch.deploy --delete deploy.endpoint_name=dogbreed-endpoint-2025-01-01-12-00-00-000
"""

from __future__ import annotations

import base64
import json
import logging
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dogbreed.config import CONFIG_DIR, ConfigError
from launch.cli import run_main, write_json
from launch.session import bucket, check_status, console_url, make_session, resolve_role, wait_until

log = logging.getLogger("launch.deploy")
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
# The handler inside model.tar.gz (code/inference.py); SageMaker's inference toolkit imports it from here.
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}


def check_archive(path: Path) -> Path:
    """``path`` must be a model.tar.gz holding model.pt and code/inference.py
    (what dogbreed.train exports)."""
    if not path.is_file():
        raise ConfigError(
            f"deploy.model: {path} does not exist; point it at a run directory, its "
            "model/model.tar.gz, or an s3:// URI"
        )
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
    except tarfile.TarError as exc:
        raise ConfigError(f"deploy.model: {path} is not a readable model.tar.gz ({exc})") from None
    missing = {"model.pt", "code/inference.py"} - names
    if missing:
        raise ConfigError(
            f"deploy.model: {path} lacks {', '.join(sorted(missing))}; export it with "
            "`python -m dogbreed.train` (export.enabled=true)"
        )
    return path


def local_archive(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        candidates = [path / "model" / "model.tar.gz", path / "model.tar.gz"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    return check_archive(path)


def model_data(cfg: DictConfig, session, name: str) -> str:
    """S3 URI of the model.tar.gz to serve (uploading a local one first)."""
    d = cfg.deploy
    given = [k for k in ("model", "training_job", "tuning_job") if d.get(k)]
    if len(given) != 1:
        raise ConfigError(
            "set exactly one of deploy.model (run dir, model.tar.gz or s3:// URI), "
            f"deploy.training_job or deploy.tuning_job (got {given or 'none'})"
        )
    if d.get("model"):
        if str(d.model).startswith("s3://"):
            return str(d.model)
        archive = local_archive(str(d.model))
        key_prefix = f"{cfg.launch.prefix}/models/{name}"
        return session.upload_data(str(archive), bucket=bucket(session, cfg.launch), key_prefix=key_prefix)
    job = d.get("training_job")
    if d.get("tuning_job"):
        from launch.tune_sagemaker import best_job

        job = best_job(session, str(d.tuning_job))["training_job"]
    desc = session.sagemaker_client.describe_training_job(TrainingJobName=str(job))
    check_status(desc, "TrainingJobStatus", ("Completed",), f"Training job {job}")
    return desc["ModelArtifacts"]["S3ModelArtifacts"]


def predict_file(predictor, path: str | Path) -> dict[str, Any]:
    """Send one image file (image/jpeg or image/png by its suffix) and return the decoded JSON answer."""
    path = Path(path)
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "image/jpeg")
    return predictor.predict(path.read_bytes(), initial_args={"ContentType": content_type})


def predict_batch(predictor, paths: Sequence[str | Path]) -> dict[str, Any]:
    """Send several image files in one ``application/json`` request (``{"instances": [{"b64": …}]}``)."""
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]}
    )
    return predictor.predict(body.encode(), initial_args={"ContentType": "application/json"})


def deploy(cfg: DictConfig):
    """Create model, endpoint config and endpoint; wait for InService (deploy.wait); return the predictor."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.serializers import IdentitySerializer
    from sagemaker.serverless import ServerlessInferenceConfig
    from sagemaker.utils import name_from_base

    d, launch = cfg.deploy, cfg.launch
    session = make_session(launch)
    name = d.get("endpoint_name") or name_from_base(f"{launch.base_job_name}-endpoint")
    data = model_data(cfg, session, name)
    model = PyTorchModel(
        model_data=data,
        role=resolve_role(session, launch),
        framework_version=None if d.get("image_uri") else str(d.framework_version),
        py_version=None if d.get("image_uri") else d.py_version,
        image_uri=d.get("image_uri"),
        env=dict(SERVING_ENV),
        name=name,
        predictor_cls=Predictor,
        sagemaker_session=session,
    )
    serverless = None
    if d.serverless.enabled:
        serverless = ServerlessInferenceConfig(
            memory_size_in_mb=int(d.serverless.memory_size_in_mb),
            max_concurrency=int(d.serverless.max_concurrency),
        )
    predictor = model.deploy(
        initial_instance_count=None if serverless else int(d.instance_count),
        instance_type=None if serverless else d.instance_type,
        serverless_inference_config=serverless,
        endpoint_name=name,
        wait=False,
        serializer=IdentitySerializer(content_type="image/jpeg"),
        deserializer=JSONDeserializer(),
    )
    print(f"endpoint={name}", flush=True)
    print(f"model_data={data}", flush=True)
    print(f"Follow it at {console_url(session.boto_region_name, 'endpoints', name)}", flush=True)
    if d.wait:
        client = session.sagemaker_client
        wait_until(
            lambda: client.describe_endpoint(EndpointName=name),
            "EndpointStatus",
            f"Endpoint {name}",
            float(launch.poll_s),
            ok=("InService",),
        )
    write_json(
        Path(cfg.paths.output_dir) / "endpoint.json",
        {"endpoint": name, "model_data": data, "region": session.boto_region_name},
    )
    return predictor


def delete(cfg: DictConfig) -> str:
    """Delete ``deploy.endpoint_name``: its model(s), then the endpoint and its endpoint config."""
    from sagemaker.predictor import Predictor

    name = cfg.deploy.get("endpoint_name")
    if not name:
        raise ConfigError("--delete needs deploy.endpoint_name=NAME (printed as endpoint=… by launch.deploy)")
    predictor = Predictor(str(name), sagemaker_session=make_session(cfg.launch))
    predictor.delete_model()
    predictor.delete_endpoint(delete_endpoint_config=True)
    print(f"deleted endpoint={name}", flush=True)
    return str(name)


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
    run(cfg)


if __name__ == "__main__":
    run_main(main, {"--delete": ("deploy.delete", False)})
