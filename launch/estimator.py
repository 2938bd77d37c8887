"""Build the ``sagemaker.pytorch.PyTorch`` estimator that runs ``dogbreed.train`` in a training job.

The job's code is this project, staged into a temporary ``source_dir``: the ``dogbreed``, ``launch`` and
``serve`` packages, the Hydra configs, a ``requirements.txt`` derived from the installed package's metadata
(minus torch/torchvision, which the image provides) and ``sagemaker_entry.py`` → ``launch.shim``.
Metric regexes come from ``dogbreed.callbacks.metric_lines``: the lines training prints are the source.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from packaging.requirements import Requirement

from dogbreed.callbacks.metric_lines import EPOCH_KEYS, FINAL_KEYS, metric_regex
from dogbreed.config import CONFIG_DIR, ConfigError
from launch.overrides import to_hyperparameters, training_overrides
from launch.session import bucket, resolve_role, s3_uri

log = logging.getLogger("launch")
ENTRY_POINT = "sagemaker_entry.py"
ENTRY_SOURCE = (
    '"""SageMaker runs this file; see launch/shim.py."""\n'
    "from launch.shim import main\n\nraise SystemExit(main())\n"
)
PROVIDED_BY_IMAGE = {"torch", "torchvision"}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def metric_definitions() -> list[dict[str, str]]:
    """One SageMaker metric definition per key the training prints (epoch lines and final lines)."""
    keys = dict.fromkeys((*EPOCH_KEYS, *FINAL_KEYS))
    return [{"Name": key, "Regex": metric_regex(key)} for key in keys]


def is_accelerated(instance_type: str) -> bool:
    """GPU (p*, g*) or Trainium (trn*) instance: where torch_distributed is supported."""
    return bool(re.match(r"ml\.(p|g|trn)\d", instance_type or ""))


def requirements(extras: Sequence[str]) -> list[str]:
    """This package's dependencies (and ``extras``) from its installed metadata,
    minus what the image ships."""
    try:
        declared = importlib.metadata.requires("dogbreed") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "dogbreed is not installed, so its dependencies are unknown: run `pip install -e .` "
            "(or `make .venv`) before launching"
        ) from None
    lines = []
    for text in declared:
        req = Requirement(text)
        if req.name in PROVIDED_BY_IMAGE or req.name == "dogbreed":
            continue
        if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras):
            req.marker = None
            lines.append(str(req))
    return sorted(dict.fromkeys(lines))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {name!r} is not importable; it is part of the training job's code")
    return Path(next(iter(spec.submodule_search_locations)))


@contextmanager
def staged_source(extras: Sequence[str]) -> Iterator[Path]:
    """A temporary source_dir holding exactly what the job needs (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="dogbreed-source-") as tmp:
        root = Path(tmp)
        for package in ("dogbreed", "launch", "serve"):
            shutil.copytree(_package_dir(package), root / package, ignore=_IGNORE)
        if not (root / "dogbreed" / "conf" / "train.yaml").is_file():
            shutil.copytree(CONFIG_DIR, root / "conf", ignore=_IGNORE)
        (root / "requirements.txt").write_text("\n".join(requirements(extras)) + "\n")
        (root / ENTRY_POINT).write_text(ENTRY_SOURCE)
        yield root


def _instantiate_all(nodes: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(node) for node in (nodes or {}).values() if node is not None]


def debugger_kwargs(launch: DictConfig, output_path: str, checkpointing: bool) -> dict[str, Any]:
    """DebuggerHookConfig + built-in Debugger rules + ProfilerConfig + ProfilerReport, from
    ``launch.debugger`` and ``launch.profiler``. Rules save the hook's collections (one save interval
    per collection)."""
    kwargs: dict[str, Any] = {"rules": []}
    dbg, prof = launch.get("debugger"), launch.get("profiler")
    if dbg is not None and dbg.get("enabled", True) and checkpointing:
        log.warning(
            "SageMaker SDK v2 switches the Debugger hook off whenever checkpointing is on (launch.use_spot "
            "or launch.checkpoint_s3_uri), so the built-in Debugger rules are skipped for this job; the "
            "in-job debugger callback still writes reports/debugger.json"
        )
    if dbg is not None and dbg.get("enabled", True) and not checkpointing:
        hook = hydra.utils.instantiate(dbg.hook_config, _convert_="all")
        hook.s3_output_path = hook.s3_output_path or f"{output_path}/debug-output"
        by_name = {c.name: c for c in hook.collection_configs or []}
        for rule in _instantiate_all(dbg.get("rules")):
            rule.collection_configs = [by_name.get(c.name, c) for c in rule.collection_configs or []]
            kwargs["rules"].append(rule)
        kwargs["debugger_hook_config"] = hook
    else:
        kwargs["debugger_hook_config"] = False
    if prof is not None and prof.get("enabled", True):
        config = hydra.utils.instantiate(prof.config, _convert_="all")
        config.s3_output_path = config.s3_output_path or output_path
        kwargs["profiler_config"] = config
        kwargs["rules"] += _instantiate_all(prof.get("rules"))
    else:
        kwargs["disable_profiler"] = True
    kwargs["rules"] = kwargs["rules"] or None
    return kwargs


def job_name(launch: DictConfig) -> str:
    from sagemaker.utils import name_from_base

    name = launch.get("job_name") or name_from_base(launch.base_job_name)
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
        raise ConfigError(f"launch.job_name={name!r} must be 1-63 letters, digits and hyphens")
    return name


def distribution(launch: DictConfig) -> dict[str, Any] | None:
    choice = launch.get("distribution") or "none"
    if choice == "auto":
        choice = (
            "torch_distributed"
            if launch.instance_count > 1 and is_accelerated(launch.instance_type)
            else "none"
        )
    if choice == "none":
        return None
    if choice == "torch_distributed":
        return {"torch_distributed": {"enabled": True}}
    raise ConfigError(f"launch.distribution={choice!r} must be auto, none or torch_distributed")


def build_estimator(cfg: DictConfig, session, overrides: Sequence[str], source_dir: Path, name: str):
    """The PyTorch estimator for ``cfg`` (composed launch config) and the user's CLI ``overrides``."""
    from sagemaker.pytorch import PyTorch

    launch = cfg.launch
    bkt = bucket(session, launch)
    output_path = s3_uri(bkt, launch.prefix, "jobs")
    checkpoint = launch.get("checkpoint_s3_uri")
    if checkpoint is None and launch.use_spot:
        checkpoint = s3_uri(bkt, launch.prefix, "checkpoints", name)
    max_wait = launch.get("max_wait") or (2 * launch.max_run if launch.use_spot else None)
    if max_wait is not None and max_wait < launch.max_run:
        raise ConfigError(f"launch.max_wait={max_wait} must be >= launch.max_run={launch.max_run}")
    if launch.network_isolation and not launch.get("image_uri"):
        log.warning(
            "launch.network_isolation=true with the stock PyTorch image: requirements.txt cannot be "
            "installed without network; set launch.image_uri to an image with dogbreed's dependencies"
        )
    hyperparameters = to_hyperparameters(training_overrides(overrides))
    return PyTorch(
        entry_point=ENTRY_POINT,
        source_dir=str(source_dir),
        framework_version=None if launch.get("image_uri") else str(launch.framework_version),
        py_version=None if launch.get("image_uri") else launch.py_version,
        image_uri=launch.get("image_uri"),
        role=resolve_role(session, launch),
        instance_type=launch.instance_type,
        instance_count=int(launch.instance_count),
        volume_size=int(launch.volume_size),
        max_run=int(launch.max_run),
        use_spot_instances=bool(launch.use_spot),
        max_wait=max_wait,
        checkpoint_s3_uri=checkpoint,
        checkpoint_local_path=launch.checkpoint_local_path if checkpoint else None,
        distribution=distribution(launch),
        enable_network_isolation=bool(launch.network_isolation),
        hyperparameters=hyperparameters,
        metric_definitions=metric_definitions(),
        output_path=output_path,
        code_location=s3_uri(bkt, launch.prefix, "code"),
        base_job_name=launch.base_job_name,
        environment={k: str(v) for k, v in (launch.get("environment") or {}).items()} or None,
        tags=[{"Key": k, "Value": str(v)} for k, v in (launch.get("tags") or {}).items()] or None,
        sagemaker_session=session,
        **debugger_kwargs(launch, output_path, checkpointing=checkpoint is not None),
    )


def channels(cfg: DictConfig, session) -> dict[str, str] | None:
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
        log.info("Uploading %s to s3://%s/%s", layout.root, bucket(session, launch), key_prefix)
        uploaded = session.upload_data(
            str(layout.root), bucket=bucket(session, launch), key_prefix=key_prefix
        )
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
        result["weights"] = session.upload_data(
            str(weights), bucket=bucket(session, launch), key_prefix=f"{launch.prefix}/weights"
        )
    return result or None
