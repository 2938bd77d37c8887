"""SageMaker Python SDK v3 (``sagemaker>=3.9,<4``): the ``launch.job`` descriptions as v3 calls.

A training job is a ``sagemaker.train.ModelTrainer`` (``SourceCode``/``Compute``/``InputData``/
``CheckpointConfig``/``StoppingCondition``; the code and v3's own driver travel as the ``code`` and
``sm_drivers`` input channels and ``sm_train.sh`` runs ``sagemaker_entry.py`` with its own ``SM_*``
variables), a tuning job a ``sagemaker.train.tuner.HyperparameterTuner`` over it (its training jobs run the
image's training toolkit: the tuning API takes no container entrypoint), and models and endpoints are
made with v3's ``Session`` helpers (``create_model``, ``endpoint_from_production_variants``; see
``launch.sdk.common``).

Workarounds, each for something v3 3.27 does not offer (see the README, "On SageMaker"):
- ``ModelTrainer.train()`` always names the job ``<base_job_name>-<timestamp>``; to honour
  ``launch.job_name`` the request ModelTrainer builds (``_create_training_job_args``) is sent with our name.
- ``HyperparameterTuner`` leaves ``EnableNetworkIsolation`` out of the tuning job's training definition;
  ``_Tuner`` puts it back.
- ModelTrainer has no Debugger or profiler arguments (``BUILTIN_DEBUGGER = False``):
  ``launch.debugger.builtin_rules=true`` is ignored with a warning; the in-job reports are written either way.
- v3's driver exports each hyperparameter as the shell variable ``SM_HP_<NAME>`` and stops at a name a shell
  rejects (``SM_HP_MODEL.LR``): a training job's dotted keys travel as ``model__lr`` (``launch.overrides``;
  the shim reads them back). A tuning job's training jobs run the toolkit, which takes them as they are.
- ``sagemaker.core.transformer.Transformer.transform`` before sagemaker-core 2.18 (sagemaker 3.18) sends
  CreateTransformJob with Tags, then fails rebuilding its TransformJob from the request
  (aws/sagemaker-python-sdk#6090, fixed by #6110): with those versions a transform job's tags follow with
  AddTags (``Helpers.transform_tags_on_create``).
- ModelTrainer checks the execution role with ``iam:SimulatePrincipalPolicy`` when it is built; when that
  call itself fails (moto has no such API) the error says how to skip the check (``SAGEMAKER_VALIDATE_ROLE``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from sagemaker.core import image_uris, parameter, shapes
from sagemaker.core.helper.session_helper import Session as NativeSession
from sagemaker.core.helper.session_helper import container_def, production_variant
from sagemaker.core.serverless_inference_config import ServerlessInferenceConfig
from sagemaker.core.transformer import Transformer
from sagemaker.core.utils.exceptions import FailedStatusError, TimeoutExceededError
from sagemaker.train.tuner import HyperparameterTuner

from dogbreed.config import ConfigError
from launch import job as spec
from launch.overrides import v3_hyperparameter_name
from launch.sdk.common import Helpers, image_uri, tuner_arguments
from launch.session import Session, sdk_config
from launch.space import sagemaker_range

NAME = "v3"
BUILTIN_DEBUGGER = False  # ModelTrainer has no Debugger or profiler arguments
_CORE = tuple(int(n) for n in re.findall(r"\d+", importlib.metadata.version("sagemaker-core"))[:2])
HELPERS = Helpers(
    image_uris, ServerlessInferenceConfig, container_def, production_variant, Transformer, _CORE >= (2, 18)
)
LIMITS = (
    "ModelTrainer has no Debugger or profiler settings (launch.debugger.builtin_rules is ignored; the in-job "
    "reports/debugger.* and reports/profiler.* are written either way); training jobs run through v3's "
    "sm_train.sh driver, the training jobs of a tuning job through the image's training toolkit"
)
log = logging.getLogger("launch")


def session(region: str, bucket: str | None, telemetry: bool) -> NativeSession:
    """v3's Session, sharing one SageMaker client with sagemaker-core's resources (which make their own
    per boto3 session otherwise): every call goes through ``Session.client``."""
    from sagemaker.core.config import load_sagemaker_config
    from sagemaker.core.utils.utils import SageMakerClient

    boto = boto3.Session(region_name=region)
    return NativeSession(
        boto_session=boto,
        sagemaker_client=SageMakerClient(session=boto, region_name=region).sagemaker_client,
        sagemaker_config=sdk_config(telemetry, load_sagemaker_config()),
        default_bucket=bucket,
    )


def execution_role(native: NativeSession) -> str:
    from sagemaker.core.helper.session_helper import get_execution_role

    return get_execution_role(native)


def unique_name(base: str, max_length: int = 63, short: bool = False) -> str:
    from sagemaker.core.common_utils import name_from_base

    return name_from_base(base, max_length=max_length, short=short)


def _trainer(sess: Session, job: spec.TrainingJob):
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        MetricDefinition,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    sess.native.default_bucket_prefix = job.prefix  # where ModelTrainer stages code and drivers
    stopping = StoppingCondition(max_runtime_in_seconds=job.max_run_s)
    if job.max_wait_s is not None:
        stopping.max_wait_time_in_seconds = job.max_wait_s
    image = image_uri(sess, job.image, "training", job.instance_type)
    with _explained_role_check():
        trainer = ModelTrainer(
            sagemaker_session=sess.native,
            role=job.role,
            base_job_name=job.base_job_name,
            training_image=image,
            source_code=SourceCode(
                source_dir=str(job.source_dir), entry_script=job.entry_point, requirements="requirements.txt"
            ),
            distributed=Torchrun() if job.distributed else None,
            compute=Compute(
                instance_type=job.instance_type,
                instance_count=job.instance_count,
                volume_size_in_gb=job.volume_size_gb,
                enable_managed_spot_training=job.use_spot or None,
            ),
            networking=Networking(enable_network_isolation=True) if job.network_isolation else None,
            stopping_condition=stopping,
            output_data_config=OutputDataConfig(s3_output_path=job.output_path),
            checkpoint_config=CheckpointConfig(
                s3_uri=job.checkpoint_s3_uri, local_path=job.checkpoint_local_path
            )
            if job.checkpoint_s3_uri
            else None,
            environment=dict(job.environment),
            hyperparameters=dict(job.hyperparameters),
            tags=[Tag(key=k, value=v) for k, v in job.tags.items()] or None,
        ).with_metric_definitions(
            [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in job.metric_definitions]
        )
    return trainer


@contextmanager
def _explained_role_check() -> Iterator[None]:
    """ModelTrainer's client-side role check failing as a call (not as a verdict: a role that lacks
    permissions is the SDK's own RoleValidationError, and a caller without iam:SimulatePrincipalPolicy only
    gets its warning) → an error that says how to skip the check."""
    try:
        yield
    # NotImplementedError: moto in-process; ResponseParserError: moto_server's HTTP 500.
    except (ClientError, BotoCoreError, ResponseParserError, NotImplementedError) as exc:
        raise ConfigError(
            f"SDK v3 checks launch.role with iam:SimulatePrincipalPolicy before a job, and that call failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Set SAGEMAKER_VALIDATE_ROLE=false to "
            "skip SDK v3's check (needed against moto, which has no SimulatePrincipalPolicy)"
        ) from exc


def _inputs(job: spec.TrainingJob) -> list[Any]:
    """The data channels, each in File mode (as v2 states it too: the tuner copies channels as given)."""
    from sagemaker.core.training.configs import Channel, DataSource, S3DataSource

    return [
        Channel(
            channel_name=name,
            data_source=DataSource(
                s3_data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type="FullyReplicated"
                )
            ),
            input_mode="File",
        )
        for name, uri in job.channels.items()
    ]


def _driver_hyperparameters(hyperparameters: Mapping[str, str]) -> dict[str, str]:
    """The names v3's driver can export as ``SM_HP_<NAME>`` (``model.lr`` → ``model__lr``)."""
    try:
        return {v3_hyperparameter_name(key): value for key, value in hyperparameters.items()}
    except ValueError as exc:
        raise ConfigError(f"launch.sdk=v3: {exc}") from None


def start_training(sess: Session, job: spec.TrainingJob) -> None:
    """CreateTrainingJob named ``job.name`` (returns at once; see the module docstring)."""
    from sagemaker.core.resources import TrainingJob

    trainer = _trainer(sess, replace(job, hyperparameters=_driver_hyperparameters(job.hyperparameters)))
    request = trainer._create_training_job_args(input_data_config=_inputs(job))
    request["training_job_name"] = job.name
    try:
        TrainingJob.create(session=sess.native.boto_session, region=sess.region, **request)
    finally:
        if trainer._temp_code_dir is not None:
            trainer._temp_code_dir.cleanup()


class _Tuner(HyperparameterTuner):
    """v3's tuner, with network isolation carried into the tuning job's training definition."""

    def _build_training_job_definition(self, inputs):  # noqa: ANN001 - the SDK's own signature
        definition = super()._build_training_job_definition(inputs)
        networking = self.model_trainer.networking
        if networking is not None and networking.enable_network_isolation:
            definition.enable_network_isolation = True
        return definition


def start_tuning(sess: Session, tuning: spec.Tuning) -> None:
    """CreateHyperParameterTuningJob over the training job (the tuning API has no Debugger settings)."""
    job = tuning.training
    trainer = _trainer(sess, job)
    strategy_config = None
    if tuning.hyperband is not None:
        low, high = tuning.hyperband
        strategy_config = shapes.HyperParameterTuningJobStrategyConfig(
            hyperband_strategy_config=shapes.HyperbandStrategyConfig(min_resource=low, max_resource=high)
        )
    warm_start = None
    if tuning.warm_start is not None:
        kind, parents = tuning.warm_start
        warm_start = shapes.HyperParameterTuningJobWarmStartConfig(
            parent_hyper_parameter_tuning_jobs=[
                shapes.ParentHyperParameterTuningJob(hyper_parameter_tuning_job_name=p) for p in parents
            ],
            warm_start_type=kind,
        )
    tuner = _Tuner(
        model_trainer=trainer,
        hyperparameter_ranges={key: sagemaker_range(p, parameter) for key, p in tuning.ranges.items()},
        strategy_config=strategy_config,
        warm_start_config=warm_start,
        **tuner_arguments(tuning),
    )
    tuner.tune(inputs=_inputs(job) or None, job_name=tuning.name, wait=False)


def follow_logs(sess: Session, name: str, poll_s: float, timeout_s: float) -> None:
    """Stream the job's CloudWatch logs until it ends or ``timeout_s`` passes (the caller checks how)."""
    from sagemaker.core.resources import TrainingJob

    job = TrainingJob.get(training_job_name=name, session=sess.native.boto_session, region=sess.region)
    try:
        job.wait(poll=max(1, int(poll_s)), timeout=max(1, int(timeout_s)), logs=True)
    except (FailedStatusError, TimeoutExceededError):
        return
