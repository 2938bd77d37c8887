"""The SageMaker model ``launch.deploy`` and ``launch.transform`` both serve: which archive, which image.

Their config groups (``deploy.*``, ``transform.*``) share these keys (conf/sagemaker_model/default.yaml):
``model`` (a run directory, its model/model.tar.gz, or an s3:// URI; local files are uploaded first),
``training_job`` (that job's artifact) or ``tuning_job`` (its best job's artifact), exactly one of them; and
the PyTorch inference image (``framework_version``/``py_version``) or ``image_uri``. model.tar.gz already
holds model.pt and code/inference.py, so the image serves it as is.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from omegaconf import DictConfig

from dogbreed.config import ConfigError
from launch.job import Image, Model
from launch.session import Session, check_status

# The handler inside model.tar.gz (code/inference.py); SageMaker's inference toolkit imports it from here.
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}


def check_archive(path: Path, key: str) -> Path:
    """``path`` must be a model.tar.gz holding model.pt and code/inference.py (what dogbreed.train
    exports); ``key`` is the config key that named it."""
    if not path.is_file():
        raise ConfigError(
            f"{key}: {path} does not exist; point it at a run directory, its model/model.tar.gz, or an "
            "s3:// URI"
        )
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
    except tarfile.TarError as exc:
        raise ConfigError(f"{key}: {path} is not a readable model.tar.gz ({exc})") from None
    missing = {"model.pt", "code/inference.py"} - names
    if missing:
        raise ConfigError(
            f"{key}: {path} lacks {', '.join(sorted(missing))}; export it with "
            "`python -m dogbreed.train` (export.enabled=true)"
        )
    return path


def local_archive(model: str, key: str) -> Path:
    """A run directory (its model/model.tar.gz) or a model.tar.gz, checked."""
    path = Path(model)
    if path.is_dir():
        candidates = [path / "model" / "model.tar.gz", path / "model.tar.gz"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    return check_archive(path, key)


def model_data(cfg: DictConfig, group: str, session: Session, name: str) -> str:
    """S3 URI of the model.tar.gz that ``cfg[group]`` names (a local one is uploaded first, under
    ``<launch.prefix>/models/<name>``)."""
    node = cfg[group]
    given = [k for k in ("model", "training_job", "tuning_job") if node.get(k)]
    if len(given) != 1:
        raise ConfigError(
            f"set exactly one of {group}.model (run dir, model.tar.gz or s3:// URI), "
            f"{group}.training_job or {group}.tuning_job (got {given or 'none'})"
        )
    if node.get("model"):
        if str(node.model).startswith("s3://"):
            return str(node.model)
        archive = local_archive(str(node.model), f"{group}.model")
        return session.upload(archive, session.bucket(cfg.launch), f"{cfg.launch.prefix}/models/{name}")
    job = node.get("training_job")
    if node.get("tuning_job"):
        from launch.tune_sagemaker import best_job

        job = best_job(session, str(node.tuning_job))["training_job"]
    desc = session.client.describe_training_job(TrainingJobName=str(job))
    check_status(desc, "TrainingJobStatus", ("Completed",), f"Training job {job}")
    return desc["ModelArtifacts"]["S3ModelArtifacts"]


def model_spec(cfg: DictConfig, group: str, session: Session, name: str) -> Model:
    """The SageMaker model ``cfg[group]`` describes: the PyTorch inference image (or ``image_uri``) over
    the archive, named ``name``."""
    node = cfg[group]
    image = Image(uri=node.image_uri) if node.get("image_uri") else Image(
        framework_version=str(node.framework_version), py_version=str(node.py_version)
    )  # fmt: skip
    return Model(
        name=name,
        role=session.role(cfg.launch),
        image=image,
        model_data=model_data(cfg, group, session, name),
        environment=dict(SERVING_ENV),
    )
