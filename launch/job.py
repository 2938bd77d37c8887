"""What a launch asks SageMaker for, in SDK-neutral terms: one training job, one tuning job, one model.

``launch.train``, ``launch.tune backend=sagemaker`` and ``launch.deploy`` build these descriptions from the
composed config; the adapters ``launch.sdk.v2`` / ``launch.sdk.v3`` turn them into SageMaker Python SDK calls.
Everything a user configures is decided here, once, so both SDKs send the same job (the tests assert the
request payloads). ``Model`` is what CreateModel needs: an endpoint (``launch.deploy``) and a batch transform
job (``Transform``, ``launch.transform``) are both built on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dogbreed.config import ConfigError
from dogbreed.metric_format import EPOCH_KEYS, FINAL_KEYS, metric_regex
from launch.overrides import to_hyperparameters, training_overrides
from launch.session import Session, s3_uri
from launch.source import ENTRY_POINT

_DEBUGGER_WORDS = re.compile(r"debug|profil|rule", re.IGNORECASE)


@dataclass(frozen=True)
class Image:
    """A container image: an explicit ``uri``, or the SageMaker PyTorch image of a framework version."""

    framework_version: str | None = None
    py_version: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class BuiltinDebugger:
    """AWS's own Debugger and Profiler resources (``launch.debugger.builtin_rules=true``).

    ``hook`` is ``{"s3_output_path", "hook_parameters", "collections": {name: parameters}}`` (None: no hook);
    ``rules``/``profiler_rules`` map smdebug_rulesconfig names to rule parameters; ``profiler`` is
    ``{"s3_output_path", "interval_ms"}`` (None: system monitoring off)."""

    hook: dict[str, Any] | None
    rules: dict[str, dict[str, str]]
    profiler: dict[str, Any] | None
    profiler_rules: dict[str, dict[str, str]]


@dataclass(frozen=True)
class TrainingJob:
    """One training job: the code, the machine, the limits, the data and what to record."""

    name: str
    base_job_name: str
    role: str
    image: Image
    instance_type: str
    instance_count: int
    volume_size_gb: int
    max_run_s: int
    max_wait_s: int | None
    use_spot: bool
    checkpoint_s3_uri: str | None
    checkpoint_local_path: str | None
    distributed: bool  # torch_distributed (torchrun on every instance)
    network_isolation: bool
    hyperparameters: dict[str, str]
    metric_definitions: list[dict[str, str]]
    output_path: str
    code_location: str
    prefix: str  # launch.prefix: the key prefix of everything the job stages in the bucket
    environment: dict[str, str]
    tags: dict[str, str]
    channels: dict[str, str]
    source_dir: Path
    entry_point: str = ENTRY_POINT
    debugger: BuiltinDebugger | None = None


@dataclass(frozen=True)
class Tuning:
    """A hyperparameter tuning job over ``training`` (its hyperparameters are the static ones)."""

    name: str
    training: TrainingJob
    objective: str
    objective_type: str  # Maximize | Minimize
    ranges: dict[str, Any]  # hyperparameter -> launch.space parameter
    strategy: str
    max_jobs: int | None
    max_parallel_jobs: int
    early_stopping_type: str
    random_seed: int | None = None
    max_runtime_s: int | None = None
    hyperband: tuple[int, int] | None = None  # (min_resource, max_resource)
    warm_start: tuple[str, tuple[str, ...]] | None = None  # (type, parent tuning jobs)


@dataclass(frozen=True)
class Model:
    """A SageMaker model (CreateModel): an image serving ``model_data`` with ``environment``."""

    name: str
    role: str
    image: Image
    model_data: str
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transform:
    """A Batch Transform job over the model ``model_name``: every object under ``input_uri`` (an S3 prefix
    ending in ``/``) is one request of ``content_type`` (no splitting: one image per request), answered as
    ``accept``; the answer to ``<input_uri><key>`` lands at ``<output_path>/<key>.out``."""

    name: str
    model_name: str
    input_uri: str
    output_path: str
    instance_type: str
    instance_count: int
    max_concurrent_transforms: int
    max_payload_mb: int
    content_type: str
    accept: str
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """A real-time endpoint on instances, or a serverless one (``serverless`` = (memory MB, concurrency))."""

    name: str
    instance_type: str | None
    instance_count: int | None
    serverless: tuple[int, int] | None = None


def metric_definitions() -> list[dict[str, str]]:
    """One SageMaker metric definition per key the training prints (epoch lines and final lines)."""
    keys = dict.fromkeys((*EPOCH_KEYS, *FINAL_KEYS))
    return [{"Name": key, "Regex": metric_regex(key)} for key in keys]


def is_accelerated(instance_type: str) -> bool:
    """GPU (p*, g*) or Trainium (trn*) instance: where torch_distributed is supported."""
    return bool(re.match(r"ml\.(p|g|trn)\d", instance_type or ""))


def job_name(session: Session, launch: DictConfig) -> str:
    """``launch.job_name``, or ``<launch.base_job_name>-<timestamp>``; checked against SageMaker's rules."""
    return checked_name(
        launch.get("job_name") or session.sdk.unique_name(launch.base_job_name), "launch.job_name"
    )


def checked_name(name: str, key: str) -> str:
    """``name`` (config key ``key``) if SageMaker accepts it as a job or model name."""
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
        raise ConfigError(f"{key}={name!r} must be 1-63 letters, digits and hyphens")
    return name


def distributed(launch: DictConfig) -> bool:
    """``launch.distribution``: auto = torch_distributed on several GPU/Trainium instances."""
    choice = launch.get("distribution") or "none"
    if choice == "auto":
        return launch.instance_count > 1 and is_accelerated(launch.instance_type)
    if choice not in ("none", "torch_distributed"):
        raise ConfigError(f"launch.distribution={choice!r} must be auto, none or torch_distributed")
    return choice == "torch_distributed"


def _rules(nodes: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """``{name: parameters}`` with null entries dropped (``launch.debugger.rules.overfit=null``)."""
    return {str(k): {str(p): str(v) for p, v in (node or {}).items()} for k, node in (nodes or {}).items()
            if node is not None}  # fmt: skip


def sends_debugger_hook(session: Session, launch: DictConfig) -> bool:
    """Whether the training job gets AWS's Debugger hook config (``launch.debugger.builtin_rules`` and
    ``.enabled``, with an SDK that can send it: v2)."""
    dbg = launch.get("debugger") or {}
    return bool(dbg.get("builtin_rules", False) and dbg.get("enabled", True) and session.sdk.BUILTIN_DEBUGGER)


def uses_mlflow(cfg: DictConfig) -> bool:
    """Whether the job's training config logs to MLflow (``logger=mlflow``)."""
    return bool((cfg.get("logger") or {}).get("mlflow"))


def job_extras(session: Session, cfg: DictConfig, debugger_hook: bool = True) -> list[str]:
    """The project extras the training job installs: ``launch.extras``, plus ``smdebug`` when the job gets
    the Debugger hook config (only then does the in-job debugger have a SageMaker hook to feed, for AWS's
    rule containers; our own rules and reports need no smdebug; ``debugger_hook=False``: a tuning job's,
    which never get it), plus ``mlflow`` with ``logger=mlflow``."""
    launch = cfg.launch
    extras = list(launch.extras or [])
    wanted = ["smdebug"] if debugger_hook and sends_debugger_hook(session, launch) else []
    wanted += ["mlflow"] if uses_mlflow(cfg) else []
    return extras + [e for e in wanted if e not in extras]


def job_environment(cfg: DictConfig, session: Session, overrides: Sequence[str]) -> dict[str, str]:
    """``launch.environment``, plus ``MLFLOW_TRACKING_URI`` from ``launch.mlflow.tracking_uri`` (the job's
    ``logger.mlflow.tracking_uri`` reads it)."""
    launch = cfg.launch
    env = {str(k): str(v) for k, v in (launch.get("environment") or {}).items()}
    uri = (launch.get("mlflow") or {}).get("tracking_uri")
    if uri:
        if not uses_mlflow(cfg):
            session.log.warning(
                "launch.mlflow.tracking_uri is set, but the job logs to MLflow only with logger=mlflow"
            )
        env["MLFLOW_TRACKING_URI"] = str(uri)
    elif uses_mlflow(cfg) and not any(
        o.lstrip("+").startswith("logger.mlflow.tracking_uri=") for o in overrides
    ):
        session.log.warning(
            "logger=mlflow without launch.mlflow.tracking_uri: the job's MLflow store is a SQLite file in "
            "the container, gone when the job ends; set launch.mlflow.tracking_uri to a tracking server"
        )
    return env


def builtin_debugger(session: Session, launch: DictConfig, output_path: str) -> BuiltinDebugger | None:
    """AWS Debugger/Profiler resources from ``launch.debugger``/``launch.profiler``;
    None unless ``launch.debugger.builtin_rules`` (and the SDK can send them: v3 cannot)."""
    dbg, prof = launch.get("debugger") or {}, launch.get("profiler") or {}
    if not dbg.get("builtin_rules", False):
        return None
    if not session.sdk.BUILTIN_DEBUGGER:
        session.log.warning(
            "launch.debugger.builtin_rules=true has no effect with SageMaker SDK %s (launch.sdk): its "
            "ModelTrainer has no Debugger or profiler settings, so the job gets no AWS Debugger rules, hook "
            "or ProfilerReport; the in-job debugger and profiler reports are written either way "
            "(launch.sdk=v2 sends AWS's built-in rules)",
            session.sdk.NAME,
        )
        return None
    hook = None
    if sends_debugger_hook(session, launch):
        node = OmegaConf.to_container(dbg.hook, resolve=True)
        hook = {
            "s3_output_path": node.get("s3_output_path") or f"{output_path}/debug-output",
            "hook_parameters": {str(k): str(v) for k, v in (node.get("hook_parameters") or {}).items()},
            "collections": _rules(node.get("collections")),
        }
    profiler = None
    if prof.get("enabled", True):
        profiler = {
            "s3_output_path": prof.get("s3_output_path") or output_path,
            "interval_ms": int(prof.system_monitor_interval_millis),
        }
    return BuiltinDebugger(
        hook=hook,
        rules=_rules(dbg.get("rules")) if hook else {},
        profiler=profiler,
        profiler_rules=_rules(prof.get("rules")) if profiler else {},
    )


def training_job(
    cfg: DictConfig, session: Session, overrides: Sequence[str], source_dir: Path, name: str
) -> TrainingJob:
    """The training job for ``cfg`` (composed launch config) and the user's CLI ``overrides``."""
    launch = cfg.launch
    bkt = session.bucket(launch)
    output_path = s3_uri(bkt, launch.prefix, "jobs")
    checkpoint = launch.get("checkpoint_s3_uri")
    if checkpoint is None and launch.use_spot:
        checkpoint = s3_uri(bkt, launch.prefix, "checkpoints", name)
    max_wait = launch.get("max_wait") or (2 * launch.max_run if launch.use_spot else None)
    if max_wait is not None and max_wait < launch.max_run:
        raise ConfigError(f"launch.max_wait={max_wait} must be >= launch.max_run={launch.max_run}")
    if launch.network_isolation and not launch.get("image_uri"):
        session.log.warning(
            "launch.network_isolation=true with the stock PyTorch image: requirements.txt cannot be "
            "installed without network; set launch.image_uri to an image with dogbreed's dependencies"
        )
    image = Image(uri=launch.image_uri) if launch.get("image_uri") else Image(
        framework_version=str(launch.framework_version), py_version=str(launch.py_version)
    )  # fmt: skip
    return TrainingJob(
        name=name,
        base_job_name=str(launch.base_job_name),
        role=session.role(launch),
        image=image,
        instance_type=str(launch.instance_type),
        instance_count=int(launch.instance_count),
        volume_size_gb=int(launch.volume_size),
        max_run_s=int(launch.max_run),
        max_wait_s=int(max_wait) if max_wait is not None else None,
        use_spot=bool(launch.use_spot),
        checkpoint_s3_uri=checkpoint,
        checkpoint_local_path=str(launch.checkpoint_local_path) if checkpoint else None,
        distributed=distributed(launch),
        network_isolation=bool(launch.network_isolation),
        hyperparameters=to_hyperparameters(training_overrides(overrides)),
        metric_definitions=metric_definitions(),
        output_path=output_path,
        code_location=s3_uri(bkt, launch.prefix, "code"),
        prefix=str(launch.prefix).strip("/"),
        environment=job_environment(cfg, session, overrides),
        tags={str(k): str(v) for k, v in (launch.get("tags") or {}).items()},
        channels=channels(cfg, session),
        source_dir=source_dir,
        debugger=builtin_debugger(session, launch, output_path),
    )


def channels(cfg: DictConfig, session: Session) -> dict[str, str]:
    """Input channels: train/valid/test from ``launch.inputs`` (uploaded first when local) and ``weights``."""
    from dogbreed.data.layout import find_splits

    launch = cfg.launch
    inputs, weights = launch.get("inputs"), launch.get("weights")
    result: dict[str, str] = {}
    if inputs and str(inputs).startswith("s3://"):
        prefix = str(inputs).rstrip("/")
        result = {split: f"{prefix}/{split}" for split in ("train", "valid", "test")}
    elif inputs:
        layout = find_splits(inputs)
        key_prefix = f"{launch.prefix}/data/{Path(inputs).resolve().name}"
        uploaded = session.upload(layout.root, session.bucket(launch), key_prefix)
        result = {split: f"{uploaded}/{folder.name}" for split, folder in layout.splits.items()}
    elif cfg.data.get("synthetic") is None:
        raise ConfigError(
            "launch.inputs is not set, so the job has no data: pass an S3 prefix holding train/ valid/ "
            "test/ (launch.inputs=s3://bucket/dogImages) or a local folder to upload "
            "(launch.inputs=data/dogImages)"
        )
    if weights and str(weights).startswith("s3://"):
        result["weights"] = str(weights)
    elif weights:
        if not Path(weights).is_file():
            raise ConfigError(
                f"launch.weights={weights}: no such file (a backbone state dict, e.g. resnet50-11ad3fa6.pth)"
            )
        result["weights"] = session.upload(Path(weights), session.bucket(launch), f"{launch.prefix}/weights")
    return result


@contextmanager
def explained_rejection(job: TrainingJob) -> Iterator[None]:
    """Turn AWS refusing a job's Debugger resources into an error that names the switch to flip."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', '')}: {error.get('Message', '')}"
        if job.debugger is not None and _DEBUGGER_WORDS.search(text):
            raise ConfigError(
                f"SageMaker refused the job's Debugger settings ({text}). SageMaker Debugger is closed to "
                "AWS accounts created since 2026-07-30: run without it, launch.debugger.builtin_rules=false "
                "(our own debugger and profiler reports are still written in the job)"
            ) from exc
        raise
