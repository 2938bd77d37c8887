"""Exact SageMaker API payloads (botocore Stubber on the SageMaker client;
moto serves S3 for the code upload)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from test_launch_aws import mocked_aws

from dogbreed.config import ConfigError, compose

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
RULE_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"
METRICS = [
    {"Name": key, "Regex": r"(?:^|\s)" + key + "=" + NUMBER}
    for key in (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_acc_top5",
        "test_loss",
        "test_acc",
        "test_acc_top5",
    )
]
CHANNELS = [
    {
        "ChannelName": split,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://bkt/data/dogImages/{split}",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }
    for split in ("train", "valid", "test")
]
COMMON = [
    f"launch.role={ROLE}",
    "launch.bucket=bkt",
    "launch.inputs=s3://bkt/data/dogImages",
    "model=resnet18",
    "model.lr=0.003",
]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """moto in-process (see test_launch_aws.mocked_aws)."""
    with mocked_aws(monkeypatch) as state:
        yield state


def stub_session(module: Any, monkeypatch: pytest.MonkeyPatch, plan: Callable[[Stubber], None]) -> dict:
    """Make ``module.make_session`` return sessions whose SageMaker client answers from a Stubber."""
    made: dict = {}
    real = module.make_session

    def make(launch):
        session = real(launch)
        stubber = Stubber(session.sagemaker_client)
        seen: dict = {}
        session.sagemaker_client.meta.events.register(
            "provide-client-params.sagemaker.*", lambda params, **_: seen.update(params)
        )
        plan(stubber)
        stubber.activate()
        made.update(stubber=stubber, params=seen, session=session)
        return session

    monkeypatch.setattr(module, "make_session", make)
    return made


def training_request(name: str, hyperparameters: dict[str, str]) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "TrainingImage": IMAGE,
            "MetricDefinitions": METRICS,
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": ROLE,
        "InputDataConfig": CHANNELS,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/dogbreed/jobs"},
        "ResourceConfig": {"VolumeSizeInGB": 50, "InstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "HyperParameters": {
            "model": '"resnet18"',
            "model.lr": '"0.003"',
            "sagemaker_submit_directory": f'"s3://bkt/dogbreed/code/{name}/source/sourcedir.tar.gz"',
            "sagemaker_program": '"sagemaker_entry.py"',
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": f'"{name}"',
            "sagemaker_region": '"us-east-1"',
            **hyperparameters,
        },
        "ProfilerRuleConfigurations": [
            {
                "RuleConfigurationName": "ProfilerReport",
                "RuleEvaluatorImage": RULE_IMAGE,
                "RuleParameters": {"rule_to_invoke": "ProfilerReport"},
            },
        ],  # fmt: skip
        "ProfilerConfig": {
            "S3OutputPath": "s3://bkt/dogbreed/jobs",
            "DisableProfiler": False,
            "ProfilingIntervalInMilliseconds": 500,
        },
    }


def test_create_training_job_with_debugger_rules_and_wait(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launch import train

    name = "dogbreed-test-1"
    expected = training_request(name, {})
    rules = ["VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization", "LossNotDecreasing"]
    expected["DebugRuleConfigurations"] = [
        {
            "RuleConfigurationName": r,
            "RuleEvaluatorImage": RULE_IMAGE,
            "RuleParameters": {"rule_to_invoke": r},
        }
        for r in rules
    ]
    expected["DebugHookConfig"] = {
        "S3OutputPath": "s3://bkt/dogbreed/jobs/debug-output",
        "HookParameters": {"train.save_interval": "100", "eval.save_interval": "10"},
        "CollectionConfigurations": ANY,  # a set inside the SDK: order varies, checked below
    }
    done = {
        "TrainingJobName": name, "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x",
        "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "CreationTime": 0,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://bkt/dogbreed/jobs/{name}/output/model.tar.gz"},
        "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 50}, "StoppingCondition": {},
        "FinalMetricDataList": [{"MetricName": "test_acc", "Value": 0.81, "Timestamp": 0}],
    }  # fmt: skip

    def plan(stubber: Stubber) -> None:
        stubber.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, expected)
        stubber.add_response(
            "describe_training_job", done, {"TrainingJobName": name}
        )  # already done: no log tail
        stubber.add_response("describe_training_job", done, {"TrainingJobName": name})

    made = stub_session(train, monkeypatch, plan)
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail(f"waited {s} s"))
    overrides = [*COMMON, f"launch.job_name={name}", "launch.wait=true", f"paths.output_dir={tmp_path}"]
    record = train.run(compose("launch_train", overrides), overrides)
    made["stubber"].assert_no_pending_responses()
    collections = sorted((c["CollectionName"], c["CollectionParameters"]["save_interval"])
                         for c in made["params"]["DebugHookConfig"]["CollectionConfigurations"])  # fmt: skip
    # One save interval per collection: the rules' own defaults (500) give way to the hook's.
    assert collections == [("gradients", "100"), ("losses", "10"), ("relu_input", "500"), ("weights", "100")]
    assert record["metrics"] == {"test_acc": 0.81} and record["model_data"].endswith(
        f"{name}/output/model.tar.gz"
    )


def test_create_training_job_spot_distributed_isolated(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launch import train

    name = "dogbreed-test-2"
    weights = tmp_path / "resnet18-f37072fd.pth"
    weights.write_bytes(b"state dict")
    expected = training_request(name, {
        "sagemaker_torch_distributed_enabled": "true",
        "sagemaker_instance_type": '"ml.g5.12xlarge"',
        # Network isolation: the code travels as an input channel, not downloaded by the container.
        "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
    })  # fmt: skip
    expected["ResourceConfig"] = {"VolumeSizeInGB": 50, "InstanceCount": 2, "InstanceType": "ml.g5.12xlarge"}
    expected["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    expected["EnableManagedSpotTraining"] = True
    expected["CheckpointConfig"] = {
        "S3Uri": f"s3://bkt/dogbreed/checkpoints/{name}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    expected["EnableNetworkIsolation"] = True
    expected["InputDataConfig"] = [*CHANNELS, *({
        "ChannelName": channel,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                                        "S3Uri": uri}},
    } for channel, uri in [("weights", "s3://bkt/dogbreed/weights/resnet18-f37072fd.pth"),
                           ("code", f"s3://bkt/dogbreed/code/{name}/source/sourcedir.tar.gz")])]  # fmt: skip
    expected["Environment"] = {"TORCH_HOME": "/opt/ml/input/data/weights"}
    made = stub_session(
        train,
        monkeypatch,
        lambda s: s.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, expected),
    )
    overrides = [
        *COMMON, f"launch.job_name={name}", "launch.instance_count=2", "launch.instance_type=ml.g5.12xlarge",
        "launch.use_spot=true", "launch.max_run=3600", "launch.network_isolation=true",
        f"launch.weights={weights}", "+launch.environment.TORCH_HOME=/opt/ml/input/data/weights",
        f"paths.output_dir={tmp_path}",
    ]  # fmt: skip
    train.run(compose("launch_train", overrides), overrides)
    made["stubber"].assert_no_pending_responses()
    # The weights file really went to S3 (moto), where the channel points.
    body = (
        made["session"]
        .boto_session.client("s3")
        .get_object(Bucket="bkt", Key="dogbreed/weights/resnet18-f37072fd.pth")
    )
    assert body["Body"].read() == b"state dict"


def test_create_tuning_job(aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from launch import tune, tune_sagemaker

    name = "dogbreed-tune-1"
    static = {k: v for k, v in training_request(name, {})["HyperParameters"].items() if k != "model.lr"}
    expected = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2},
            "TrainingJobEarlyStoppingType": "Auto",
            "RandomSeed": 42,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "val_acc"},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {
                        "Name": "model.lr",
                        "MinValue": "0.001",
                        "MaxValue": "0.1",
                        "ScalingType": "Logarithmic",
                    },
                    {
                        "Name": "model.momentum",
                        "MinValue": "0.8",
                        "MaxValue": "0.99",
                        "ScalingType": "Linear",
                    },
                ],
                "CategoricalParameterRanges": [
                    {"Name": "data.batch_size", "Values": ['"32"', '"64"', '"128"', '"256"']}
                ],
                "IntegerParameterRanges": [
                    {"Name": "trainer.max_epochs", "MinValue": "2", "MaxValue": "5", "ScalingType": "Linear"}
                ],
            },
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                **static,
                "sagemaker_estimator_class_name": '"PyTorch"',
                "sagemaker_estimator_module": '"sagemaker.pytorch.estimator"',
            },
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://bkt/dogbreed/jobs"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "HyperParameterTuningResourceConfig": {
                "InstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge",
                "VolumeSizeInGB": 50,
            },
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "TrainingImage": IMAGE,
                "MetricDefinitions": METRICS,
            },
            "InputDataConfig": CHANNELS,
        },
        "WarmStartConfig": {
            "WarmStartType": "IdenticalDataAndAlgorithm",
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "dogbreed-tune-0"}],
        },
    }
    made = stub_session(
        tune_sagemaker, monkeypatch,
        lambda s: s.add_response("create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": "arn:x"},
                                 expected),
    )  # fmt: skip
    overrides = [*COMMON, "backend=sagemaker", f"tune.job_name={name}",
                 "tune.warm_start.parents=[dogbreed-tune-0]", f"paths.output_dir={tmp_path}"]  # fmt: skip
    assert tune.run(compose("launch_tune", overrides), overrides) == {
        "tuning_job": name,
        "region": "us-east-1",
    }
    made["stubber"].assert_no_pending_responses()


def test_hyperband_and_attach_report_the_best_job(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launch import tune, tune_sagemaker

    best = {
        "HyperParameterTuningJobName": "old-tune", "HyperParameterTuningJobArn": "arn:x",
        "HyperParameterTuningJobConfig": {"Strategy": "Hyperband",
                                          "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": "Completed", "CreationTime": 0,
        "TrainingJobStatusCounters": {"Completed": 8}, "ObjectiveStatusCounters": {"Succeeded": 8},
        "BestTrainingJob": {
            "TrainingJobName": "old-tune-007-abc", "TrainingJobArn": "arn:y", "CreationTime": 0,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": {"model.lr": "0.0123", "model.optimizer": '"adam"',
                                     "data.batch_size": '"64"'},
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "val_acc", "Value": 0.91},
        },
    }  # fmt: skip

    def plan(stubber: Stubber) -> None:
        for _ in range(2):
            stubber.add_response(
                "describe_hyper_parameter_tuning_job", best, {"HyperParameterTuningJobName": "old-tune"}
            )

    stub_session(tune_sagemaker, monkeypatch, plan)
    overrides = [*COMMON, "backend=sagemaker", "tune.attach=old-tune", f"paths.output_dir={tmp_path}"]
    record = tune.run(compose("launch_tune", overrides), overrides)
    assert (record["training_job"], record["value"]) == ("old-tune-007-abc", 0.91)
    # The best hyperparameters (JSON-quoted categoricals too) compose into a training config to rerun.
    best_yaml = (tmp_path / "best.yaml").read_text()
    assert "lr: 0.0123" in best_yaml and "optimizer: adam" in best_yaml and "batch_size: 64" in best_yaml

    kwargs = tune_sagemaker.tuner_kwargs(compose("launch_tune", ["tune.strategy=Hyperband",
                                                                 "tune.early_stopping_type=Off",
                                                                 "trainer.max_epochs=9"]).tune)  # fmt: skip
    config = kwargs["strategy_config"].to_input_req()
    assert config == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.strategy=Hyperband"], "early_stopping_type must be Off"),
        (["tune.strategy=Grid"], "needs categorical parameters only"),
        (["tune.strategy=Sobol"], "tune.strategy='Sobol' must be one of"),
        (["tune.objective=accuracy"], "tune.objective='accuracy' is not a metric the training prints"),
        (["tune.space.lr.low=0"], "need 0 < low < high for log scale"),
    ],
)
def test_tuner_settings_are_checked_before_anything_is_sent(overrides: list[str], message: str) -> None:
    from launch.tune_sagemaker import tuner_kwargs

    with pytest.raises(ConfigError, match=message):
        tuner_kwargs(compose("launch_tune", overrides).tune)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launch.role=null"], "launch.role is not set"),
        (["launch.inputs=null"], "launch.inputs is not set"),
        (["launch.job_name=no_underscores"], "launch.job_name='no_underscores' must be"),
        (["launch.use_spot=true", "launch.max_wait=60"], "launch.max_wait=60 must be >= launch.max_run"),
        (["launch.distribution=mpi"], "launch.distribution='mpi' must be"),
    ],
)
def test_launch_settings_errors_name_the_key(
    aws: dict, tmp_path: Path, overrides: list[str], message: str
) -> None:
    from launch import train

    all_overrides = [*COMMON, *overrides, f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=message):
        train.run(compose("launch_train", all_overrides), all_overrides)


def test_staged_source_is_the_whole_job(tmp_path: Path) -> None:
    """The job's source_dir runs on its own: the packages, the configs, the entry point, the requirements."""
    import subprocess
    import sys

    from launch.estimator import ENTRY_POINT, staged_source

    with staged_source(["smdebug"]) as root:
        requirements = (root / "requirements.txt").read_text().splitlines()
        names = {r.split("<")[0].split(">")[0].split("=")[0] for r in requirements}
        assert {"lightning", "hydra-core", "torchmetrics", "smdebug", "pandas"} <= names
        assert not names & {"torch", "torchvision", "sagemaker", "optuna", "dogbreed"}  # the image has torch
        assert "from launch.shim import main" in (root / ENTRY_POINT).read_text()
        probe = ("import dogbreed, dogbreed.config, launch.shim; print(dogbreed.__file__); "
                 "print((dogbreed.config.CONFIG_DIR / 'train.yaml').is_file())")  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60
        )
        where, found = done.stdout.split()
        assert where.startswith(str(root)) and found == "True", done.stderr
