"""What both adapters do the same way: the image URI, the tuner's common keywords, CreateModel,
CreateEndpointConfig + CreateEndpoint, CreateTransformJob.

SDK v3 (``sagemaker.core``) keeps v2's ``image_uris.retrieve``, its Session helpers (``container_def``,
``production_variant``, ``Session.create_model``, ``Session.endpoint_from_production_variants``) and its
``Transformer`` (same keywords) under new module names, and v3's ``HyperparameterTuner`` takes v2's keywords;
so each adapter names its SDK's objects in ``HELPERS`` and this code is written once. Deploy uses these
Session helpers rather than v3's ``sagemaker.core.resources.Model.create``, which describes the model it made
and fails validating an empty ``VpcConfig`` (as moto returns it); transform uses the ``Transformer`` both SDKs
have rather than v3's ``TransformJob.create`` (a describe after the create, and a v3-only code path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from launch import job as spec
from launch.session import Session


@dataclass(frozen=True)
class Helpers:
    """One SDK's image-URI module, serverless config and Transformer classes, and Session helper
    functions; ``transform_tags_on_create``: whether its Transformer can send Tags with CreateTransformJob."""

    image_uris: ModuleType
    serverless_config: type
    container_def: Callable[..., dict]
    production_variant: Callable[..., dict]
    transformer: type
    transform_tags_on_create: bool = True


def image_uri(sess: Session, image: spec.Image, scope: str, instance_type: str | None) -> str:
    """``image.uri``, or the SageMaker PyTorch image for ``scope`` (training | inference) on
    ``instance_type`` (None = serverless inference)."""
    helpers: Helpers = sess.sdk.HELPERS
    if image.uri:
        return image.uri
    return helpers.image_uris.retrieve(
        "pytorch",
        sess.region,
        version=image.framework_version,
        py_version=image.py_version,
        instance_type=instance_type,
        image_scope=scope,
        serverless_inference_config=None if instance_type else helpers.serverless_config(),
    )


def tuner_arguments(tuning: spec.Tuning) -> dict[str, Any]:
    """The ``HyperparameterTuner`` keywords both SDKs name alike (the estimator or trainer, the ranges, the
    strategy and warm-start configs are each SDK's own)."""
    return {
        "objective_metric_name": tuning.objective,
        # The tuner does not take them from a framework estimator: without them SageMaker finds no objective.
        "metric_definitions": tuning.training.metric_definitions,
        "objective_type": tuning.objective_type,
        "strategy": tuning.strategy,
        "max_jobs": tuning.max_jobs,
        "max_parallel_jobs": tuning.max_parallel_jobs,
        "early_stopping_type": tuning.early_stopping_type,
        "random_seed": tuning.random_seed,
        "max_runtime_in_seconds": tuning.max_runtime_s,
        "base_tuning_job_name": tuning.training.base_job_name,
    }


def create_model(sess: Session, model: spec.Model, instance_type: str | None) -> None:
    """CreateModel: the image (for ``instance_type``; None = serverless) serving ``model.model_data``."""
    helpers: Helpers = sess.sdk.HELPERS
    image = image_uri(sess, model.image, "inference", instance_type)
    sess.native.create_model(
        model.name, model.role, helpers.container_def(image, model.model_data, dict(model.environment))
    )


def create_endpoint(sess: Session, model_name: str, endpoint: spec.Endpoint) -> None:
    """CreateEndpointConfig + CreateEndpoint, both named ``endpoint.name`` (returns at once)."""
    helpers: Helpers = sess.sdk.HELPERS
    serverless = None
    if endpoint.serverless is not None:
        memory, concurrency = endpoint.serverless
        serverless = {"MemorySizeInMB": memory, "MaxConcurrency": concurrency}
    variant = helpers.production_variant(
        model_name=model_name,
        instance_type=endpoint.instance_type,
        initial_instance_count=endpoint.instance_count,
        serverless_inference_config=serverless,
    )
    sess.native.endpoint_from_production_variants(endpoint.name, [variant], wait=False)


def start_transform(sess: Session, job: spec.Transform) -> None:
    """CreateTransformJob (returns at once): one record per S3 object, sent whole (no splitting). Where the
    SDK's Transformer cannot send Tags (``Helpers.transform_tags_on_create``), they follow with AddTags."""
    helpers: Helpers = sess.sdk.HELPERS
    tags = [{"Key": k, "Value": v} for k, v in job.tags.items()]
    tag_later = bool(tags) and not helpers.transform_tags_on_create
    transformer = helpers.transformer(
        model_name=job.model_name,
        instance_count=job.instance_count,
        instance_type=job.instance_type,
        strategy="SingleRecord",
        assemble_with="None",
        output_path=job.output_path,
        accept=job.accept,
        max_concurrent_transforms=job.max_concurrent_transforms,
        max_payload=job.max_payload_mb,
        tags=None if tag_later else tags or None,
        env=dict(job.environment) or None,
        sagemaker_session=sess.native,
    )
    transformer.transform(
        job.input_uri,
        data_type="S3Prefix",
        content_type=job.content_type,
        split_type="None",
        job_name=job.name,
        wait=False,
        logs=False,
    )
    if tag_later:
        arn = sess.client.describe_transform_job(TransformJobName=job.name)["TransformJobArn"]
        sess.client.add_tags(ResourceArn=arn, Tags=tags)
