"""SageMaker Python SDK v2 (``sagemaker>=2.257.7,<3``): the ``launch.job`` descriptions as v2 calls.

A training job is a ``sagemaker.pytorch.PyTorch`` estimator (the code goes to S3 as ``sourcedir.tar.gz``
and the PyTorch image's training toolkit runs ``sagemaker_entry.py``), a tuning job a
``sagemaker.tuner.HyperparameterTuner`` over it, and models and endpoints are made with the Session's
``create_model`` and ``endpoint_from_production_variants`` (``launch.sdk.common``, through ``HELPERS``).
Maintenance mode; end of support 2027-07-06.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# We pick v2 deliberately (launch.sdk): skip its "v3 is out" notice, and its INFO lines about config files
# it did not find (set before the import, which logs them).
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
if logging.getLogger("sagemaker.config").level == logging.NOTSET:
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker import image_uris  # noqa: E402
from sagemaker.serverless import ServerlessInferenceConfig  # noqa: E402
from sagemaker.session import container_def, production_variant  # noqa: E402
from sagemaker.transformer import Transformer  # noqa: E402

from launch import job as spec  # noqa: E402
from launch.sdk.common import Helpers, tuner_arguments  # noqa: E402
from launch.session import Session, sdk_config  # noqa: E402
from launch.space import sagemaker_range  # noqa: E402

NAME = "v2"
BUILTIN_DEBUGGER = True
HELPERS = Helpers(image_uris, ServerlessInferenceConfig, container_def, production_variant, Transformer)
log = logging.getLogger("launch")


def session(region: str, bucket: str | None, telemetry: bool) -> sagemaker.Session:
    from sagemaker.config import load_sagemaker_config

    return sagemaker.Session(
        boto_session=boto3.Session(region_name=region),
        sagemaker_config=sdk_config(telemetry, load_sagemaker_config()),
        default_bucket=bucket,
    )


def execution_role(native: sagemaker.Session) -> str:
    return sagemaker.get_execution_role(native)


def unique_name(base: str, max_length: int = 63, short: bool = False) -> str:
    from sagemaker.utils import name_from_base

    return name_from_base(base, max_length=max_length, short=short)


def _debugger_kwargs(job: spec.TrainingJob) -> dict[str, Any]:
    """DebuggerHookConfig + built-in rules + ProfilerConfig + ProfilerReport, or none of them at all."""
    from sagemaker.debugger import (
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    dbg = job.debugger
    if dbg is None:
        return {"debugger_hook_config": False, "disable_profiler": True}
    kwargs: dict[str, Any] = {"rules": [], "debugger_hook_config": False}
    if dbg.hook is not None and job.checkpoint_s3_uri:
        log.warning(
            "SageMaker SDK v2 switches the Debugger hook off whenever checkpointing is on (launch.use_spot "
            "or launch.checkpoint_s3_uri), so the built-in Debugger rules are skipped for this job; the "
            "in-job debugger callback still writes reports/debugger.json"
        )
    elif dbg.hook is not None:
        collections = [CollectionConfig(name, params) for name, params in dbg.hook["collections"].items()]
        by_name = {c.name: c for c in collections}
        kwargs["debugger_hook_config"] = DebuggerHookConfig(
            s3_output_path=dbg.hook["s3_output_path"],
            hook_parameters=dbg.hook["hook_parameters"],
            collection_configs=collections,
        )
        for name, params in dbg.rules.items():
            rule = Rule.sagemaker(getattr(rule_configs, name)(), rule_parameters=params or None)
            # One save interval per collection: the hook's wins over the rule's own default.
            rule.collection_configs = [by_name.get(c.name, c) for c in rule.collection_configs or []]
            kwargs["rules"].append(rule)
    if dbg.profiler is not None:
        kwargs["profiler_config"] = ProfilerConfig(
            s3_output_path=dbg.profiler["s3_output_path"],
            system_monitor_interval_millis=dbg.profiler["interval_ms"],
        )
        kwargs["rules"] += [
            ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in dbg.profiler_rules
        ]
    else:
        kwargs["disable_profiler"] = True
    kwargs["rules"] = kwargs["rules"] or None
    return kwargs


def _estimator(sess: Session, job: spec.TrainingJob, with_debugger: bool = True):
    from sagemaker.pytorch import PyTorch

    image = job.image
    return PyTorch(
        entry_point=job.entry_point,
        source_dir=str(job.source_dir),
        framework_version=image.framework_version,
        py_version=image.py_version,
        image_uri=image.uri,
        role=job.role,
        instance_type=job.instance_type,
        instance_count=job.instance_count,
        volume_size=job.volume_size_gb,
        max_run=job.max_run_s,
        use_spot_instances=job.use_spot,
        max_wait=job.max_wait_s,
        checkpoint_s3_uri=job.checkpoint_s3_uri,
        checkpoint_local_path=job.checkpoint_local_path,
        distribution={"torch_distributed": {"enabled": True}} if job.distributed else None,
        enable_network_isolation=job.network_isolation,
        hyperparameters=dict(job.hyperparameters),
        metric_definitions=job.metric_definitions,
        output_path=job.output_path,
        code_location=job.code_location,
        base_job_name=job.base_job_name,
        environment=job.environment or None,
        tags=[{"Key": k, "Value": v} for k, v in job.tags.items()] or None,
        sagemaker_session=sess.native,
        **(
            _debugger_kwargs(job)
            if with_debugger
            else {"debugger_hook_config": False, "disable_profiler": True}
        ),
    )


def _inputs(job: spec.TrainingJob) -> dict[str, Any] | None:
    """The data channels, each in File mode (as v3 states it too)."""
    from sagemaker.inputs import TrainingInput

    return {name: TrainingInput(uri, input_mode="File") for name, uri in job.channels.items()} or None


def start_training(sess: Session, job: spec.TrainingJob) -> None:
    """CreateTrainingJob (returns at once)."""
    _estimator(sess, job).fit(_inputs(job), wait=False, job_name=job.name)


def start_tuning(sess: Session, tuning: spec.Tuning) -> None:
    """CreateHyperParameterTuningJob over the training job (the tuning API has no Debugger settings)."""
    from sagemaker import tuner as sdk

    strategy_config = None
    if tuning.hyperband is not None:
        low, high = tuning.hyperband
        strategy_config = sdk.StrategyConfig(sdk.HyperbandStrategyConfig(max_resource=high, min_resource=low))
    warm_start = None
    if tuning.warm_start is not None:
        kind, parents = tuning.warm_start
        warm_start = sdk.WarmStartConfig(sdk.WarmStartTypes(kind), parents=set(parents))
    tuner = sdk.HyperparameterTuner(
        _estimator(sess, tuning.training, with_debugger=False),
        hyperparameter_ranges={key: sagemaker_range(p, sdk) for key, p in tuning.ranges.items()},
        strategy_config=strategy_config,
        warm_start_config=warm_start,
        **tuner_arguments(tuning),
    )
    tuner.fit(_inputs(tuning.training), job_name=tuning.name, wait=False)


def follow_logs(sess: Session, name: str, poll_s: float, timeout_s: float) -> None:
    """Stream the job's CloudWatch logs until it ends or ``timeout_s`` passes."""
    sess.native.logs_for_job(name, wait=True, poll=max(1, int(poll_s)), timeout=max(1, int(timeout_s)))
