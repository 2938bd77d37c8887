"""Exact SageMaker API payloads (botocore Stubber on the SageMaker client; moto serves S3 for the code),
under whichever SDK is installed: v2 in ``.venv``, v3 in ``.venv-v3`` (``make test`` runs both).

Each expected request is one SDK-neutral part, the same dict under both SDKs (what the user configured),
plus the part each SDK adds by design: how the code reaches the container (v2: ``sourcedir.tar.gz`` and
``sagemaker_*`` hyperparameters, values JSON-quoted; v3: the ``code`` and ``sm_drivers`` channels and its
``sm_train.sh`` entrypoint, values as given), and v2's explicit ``ProfilerConfig`` opt-out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aws import SDK, staged_requirements, stub_session
from botocore.stub import ANY, Stubber
from packaging.requirements import Requirement

from dogbreed.config import ConfigError, compose
from launch.shim import parse_args

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
        "best_epoch",
        "last_val_loss",
        "last_val_acc",
        "test_loss",
        "test_acc",
        "test_acc_top5",
    )
]


def s3_channel(name: str, uri: Any, mode: bool = True) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        **({"InputMode": "File"} if mode else {}),
    }


CHANNELS = [s3_channel(split, f"s3://bkt/data/dogImages/{split}") for split in ("train", "valid", "test")]
COMMON = [
    f"launch.role={ROLE}",
    "launch.bucket=bkt",
    "launch.inputs=s3://bkt/data/dogImages",
    "model=resnet18",
    "model.lr=0.003",
]
DRIVER_LR = "model__lr" if SDK == "v3" else "model.lr"
V3_ENTRYPOINT = {
    "ContainerEntrypoint": ["/bin/bash"],
    "ContainerArguments": [
        "-c",
        "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && /opt/ml/input/data/sm_drivers/sm_train.sh",
    ],
}
V3_CODE = [
    s3_channel("code", ANY) | {"InputMode": "File"},
    s3_channel("sm_drivers", ANY) | {"InputMode": "File"},
]


def hyperparameters(name: str, values: dict[str, str], isolated: bool = False) -> dict[str, str]:
    """What each SDK sends for the user's training overrides ``values``."""
    if SDK == "v3":
        return dict(values)
    submit = "/opt/ml/input/data/code" if isolated else f"s3://bkt/dogbreed/code/{name}/source"
    return {
        **{k: f'"{v}"' for k, v in values.items()},
        "sagemaker_submit_directory": f'"{submit}/sourcedir.tar.gz"',
        "sagemaker_program": '"sagemaker_entry.py"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": f'"{name}"',
        "sagemaker_region": '"us-east-1"',
    }


def training_request(name: str, extra_channels: list | None = None, isolated: bool = False) -> dict[str, Any]:
    """CreateTrainingJob for COMMON: the neutral part, then what the installed SDK adds."""
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "TrainingImage": IMAGE,
            "MetricDefinitions": METRICS,
        },
        "RoleArn": ROLE,
        "InputDataConfig": [*CHANNELS, *(extra_channels or [])],
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/dogbreed/jobs"},
        "ResourceConfig": {"VolumeSizeInGB": 50, "InstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        # v3's driver exports each as SM_HP_<NAME>, which a "." would break: model.lr travels as model__lr.
        "HyperParameters": hyperparameters(name, {"model": "resnet18", DRIVER_LR: "0.003"}, isolated),
    }
    if SDK == "v2":
        request["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] = True
        request["ProfilerConfig"] = {"DisableProfiler": True}  # v2's explicit "no profiler": no resource
        if isolated:  # the code travels as an input channel, not downloaded by the container
            request["InputDataConfig"].append(
                s3_channel("code", f"s3://bkt/dogbreed/code/{name}/source/sourcedir.tar.gz", mode=False)
            )
    else:
        request["AlgorithmSpecification"].update(V3_ENTRYPOINT)
        request["InputDataConfig"] += V3_CODE
        request["OutputDataConfig"]["CompressionType"] = "GZIP"
    return request


def described(name: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x",
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "CreationTime": 0,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://bkt/dogbreed/jobs/{name}/output/model.tar.gz"},
        "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "FinalMetricDataList": [{"MetricName": "test_acc", "Value": 0.81, "Timestamp": 0}],
    }


def staged_packages() -> set[str]:
    return {Requirement(line).name for line in staged_requirements()}


def create_training(stubber: Stubber, expected: dict[str, Any]) -> None:
    """The create call, and the describe v3's ``TrainingJob.create`` makes right after it."""
    stubber.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, expected)
    if SDK == "v3":
        stubber.add_response(
            "describe_training_job", described(expected["TrainingJobName"]), {"TrainingJobName": ANY}
        )


def test_create_training_job_without_debugger_and_wait(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default job: no AWS Debugger resource at all (a new account has none), so no smdebug in the job
    either, followed to its end."""
    from launch import train

    name = "dogbreed-test-1"

    def plan(stubber: Stubber) -> None:
        create_training(stubber, training_request(name))
        for _ in range(2):  # already done: no log tail, no sleep
            stubber.add_response("describe_training_job", described(name), {"TrainingJobName": name})

    made = stub_session(train, monkeypatch, plan)
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail(f"waited {s} s"))
    overrides = [*COMMON, f"launch.job_name={name}", "launch.wait=true", f"paths.output_dir={tmp_path}"]
    record = train.run(compose("launch_train", overrides), overrides)
    made["stubber"].assert_no_pending_responses()
    sent = made["params"]["CreateTrainingJob"][0]
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"} & set(sent)
    assert record["metrics"] == {"test_acc": 0.81} and record["model_data"].endswith(
        f"{name}/output/model.tar.gz"
    )
    assert record["hyperparameters"] == {"model": "resnet18", "model.lr": "0.003"}  # the same under both SDKs
    argv = [token for key, value in sent["HyperParameters"].items() for token in (f"--{key}", value)]
    assert {"model=resnet18", "model.lr=0.003"} <= set(parse_args(argv))  # what the job's shim reads back
    assert "smdebug" not in staged_packages() and {"lightning", "nvidia-ml-py"} <= staged_packages()


def test_builtin_debugger_rules_and_a_rejection_that_names_the_switch(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """launch.debugger.builtin_rules=true: v2 sends the hook, the rules and ProfilerReport, the job installs
    smdebug to feed that hook, and an account without Debugger gets an error that says which switch to flip;
    v3 cannot send them and says so (and the job gets no smdebug)."""
    from launch import train

    name = "dogbreed-test-dbg"
    expected = training_request(name)
    if SDK == "v2":
        rules = [
            "VanishingGradient",
            "Overfit",
            "Overtraining",
            "PoorWeightInitialization",
            "LossNotDecreasing",
        ]
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
        expected["ProfilerRuleConfigurations"] = [
            {
                "RuleConfigurationName": "ProfilerReport",
                "RuleEvaluatorImage": RULE_IMAGE,
                "RuleParameters": {"rule_to_invoke": "ProfilerReport"},
            }
        ]
        expected["ProfilerConfig"] = {
            "S3OutputPath": "s3://bkt/dogbreed/jobs",
            "DisableProfiler": False,
            "ProfilingIntervalInMilliseconds": 500,
        }

    sessions: list[int] = []

    def plan(stubber: Stubber) -> None:
        sessions.append(1)
        if len(sessions) == 1:
            create_training(stubber, expected)
        else:  # the second run: an account without Debugger
            stubber.add_client_error(
                "create_training_job",
                "ValidationException",
                "SageMaker Debugger is not available for this account",
                400,
            )

    made = stub_session(train, monkeypatch, plan)
    overrides = [
        *COMMON,
        f"launch.job_name={name}",
        "launch.debugger.builtin_rules=true",
        f"paths.output_dir={tmp_path}",
    ]
    with caplog.at_level(logging.WARNING, logger="launch"):
        train.run(compose("launch_train", overrides), overrides)
    assert ("smdebug" in staged_packages()) is (SDK == "v2")
    if SDK == "v3":
        made["stubber"].assert_no_pending_responses()
        assert "has no effect with SageMaker SDK v3" in caplog.text
        return
    collections = sorted(
        (c["CollectionName"], c["CollectionParameters"]["save_interval"])
        for c in made["params"]["CreateTrainingJob"][0]["DebugHookConfig"]["CollectionConfigurations"]
    )
    # One save interval per collection: the rules' own defaults (500) give way to the hook's.
    assert collections == [("gradients", "100"), ("losses", "10"), ("relu_input", "500"), ("weights", "100")]
    with pytest.raises(ConfigError, match=r"ValidationException.*launch\.debugger\.builtin_rules=false"):
        train.run(compose("launch_train", overrides), overrides)
    made["stubber"].assert_no_pending_responses()


def test_create_training_job_spot_distributed_isolated(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3

    from launch import train

    name = "dogbreed-test-2"
    weights = tmp_path / "resnet18-f37072fd.pth"
    weights.write_bytes(b"state dict")
    expected = training_request(
        name, [s3_channel("weights", "s3://bkt/dogbreed/weights/resnet18-f37072fd.pth")], isolated=True
    )
    if SDK == "v2":
        expected["HyperParameters"] |= {
            "sagemaker_torch_distributed_enabled": "true",
            "sagemaker_instance_type": '"ml.g5.12xlarge"',
        }
    expected["ResourceConfig"] = {"VolumeSizeInGB": 50, "InstanceCount": 2, "InstanceType": "ml.g5.12xlarge"}
    expected["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    expected["EnableManagedSpotTraining"] = True
    expected["CheckpointConfig"] = {
        "S3Uri": f"s3://bkt/dogbreed/checkpoints/{name}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    expected["EnableNetworkIsolation"] = True
    expected["Environment"] = {"TORCH_HOME": "/opt/ml/input/data/weights"}
    expected["Tags"] = [{"Key": "team", "Value": "vision"}]
    made = stub_session(train, monkeypatch, lambda s: create_training(s, expected))
    overrides = [
        *COMMON,
        f"launch.job_name={name}",
        "launch.instance_count=2",
        "launch.instance_type=ml.g5.12xlarge",
        "launch.use_spot=true",
        "launch.max_run=3600",
        "launch.network_isolation=true",
        f"launch.weights={weights}",
        "+launch.environment.TORCH_HOME=/opt/ml/input/data/weights",
        "+launch.tags.team=vision",
        f"paths.output_dir={tmp_path}",
    ]
    train.run(compose("launch_train", overrides), overrides)
    made["stubber"].assert_no_pending_responses()
    # The weights file really went to S3 (moto), where the channel points.
    body = boto3.client("s3").get_object(Bucket="bkt", Key="dogbreed/weights/resnet18-f37072fd.pth")
    assert body["Body"].read() == b"state dict"
    if (
        SDK == "v3"
    ):  # torch_distributed: v3's torchrun driver, selected in the drivers channel's distributed.json
        channels = {c["ChannelName"]: c for c in made["params"]["CreateTrainingJob"][0]["InputDataConfig"]}
        drivers = channels["sm_drivers"]["DataSource"]["S3DataSource"]["S3Uri"].removeprefix("s3://bkt/")
        listed = boto3.client("s3").list_objects_v2(Bucket="bkt", Prefix=drivers)["Contents"]
        keys = {o["Key"].removeprefix(drivers).lstrip("/") for o in listed}
        assert {"sm_train.sh", "distributed.json", "distributed_drivers/torchrun_driver.py"} <= keys
        assert drivers.startswith("dogbreed/")  # staged under launch.prefix


TUNING_RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "model.lr", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
        {"Name": "model.momentum", "MinValue": "0.8", "MaxValue": "0.99", "ScalingType": "Linear"},
    ],
    # v2 JSON-quotes a framework estimator's categorical values, v3 sends them as given (the shim reads both).
    "CategoricalParameterRanges": [
        {
            "Name": "data.batch_size",
            "Values": [f'"{v}"' if SDK == "v2" else v for v in ("32", "64", "128", "256")],
        }
    ],
    "IntegerParameterRanges": [
        {"Name": "trainer.max_epochs", "MinValue": "2", "MaxValue": "5", "ScalingType": "Linear"}
    ],
}


def tuning_request(name: str) -> dict[str, Any]:
    static = {k: v for k, v in hyperparameters(name, {"model": "resnet18"}).items()}
    definition: dict[str, Any] = {
        "StaticHyperParameters": static,
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/dogbreed/jobs"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "TrainingImage": IMAGE,
            "MetricDefinitions": METRICS,
        },
        "InputDataConfig": CHANNELS,
    }
    if SDK == "v2":
        static |= {
            "sagemaker_estimator_class_name": '"PyTorch"',
            "sagemaker_estimator_module": '"sagemaker.pytorch.estimator"',
        }
        definition["HyperParameterTuningResourceConfig"] = {
            "InstanceCount": 1,
            "InstanceType": "ml.g4dn.xlarge",
            "VolumeSizeInGB": 50,
        }
    else:  # the tuning API takes no entrypoint: its jobs run the image's training toolkit on the tarball
        static |= {"sagemaker_program": "sagemaker_entry.py", "sagemaker_submit_directory": ANY}
        definition["ResourceConfig"] = {
            "InstanceCount": 1,
            "InstanceType": "ml.g4dn.xlarge",
            "VolumeSizeInGB": 50,
        }
        definition["InputDataConfig"] = [*CHANNELS, V3_CODE[1]]
        definition["OutputDataConfig"]["CompressionType"] = "GZIP"
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2},
            "TrainingJobEarlyStoppingType": "Auto",
            "RandomSeed": 42,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "val_acc"},
            "ParameterRanges": TUNING_RANGES,
        },
        "TrainingJobDefinition": definition,
        "WarmStartConfig": {
            "WarmStartType": "IdenticalDataAndAlgorithm",
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "dogbreed-tune-0"}],
        },
    }


def test_create_tuning_job(aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from launch import tune, tune_sagemaker

    name = "dogbreed-tune-1"

    def plan(stubber: Stubber) -> None:
        stubber.add_response(
            "create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": "arn:x"}, tuning_request(name)
        )
        if SDK == "v3":  # HyperParameterTuningJob.create describes what it created
            stubber.add_response(
                "describe_hyper_parameter_tuning_job",
                BEST | {"HyperParameterTuningJobName": name},
                {"HyperParameterTuningJobName": name},
            )

    made = stub_session(tune_sagemaker, monkeypatch, plan)
    overrides = [
        *COMMON,
        "backend=sagemaker",
        f"tune.job_name={name}",
        "tune.warm_start.parents=[dogbreed-tune-0]",
        f"paths.output_dir={tmp_path}",
    ]
    assert tune.run(compose("launch_tune", overrides), overrides) == {
        "tuning_job": name,
        "region": "us-east-1",
    }
    made["stubber"].assert_no_pending_responses()


BEST = {
    "HyperParameterTuningJobName": "old-tune",
    "HyperParameterTuningJobArn": "arn:x",
    "HyperParameterTuningJobConfig": {
        "Strategy": "Hyperband",
        "ResourceLimits": {"MaxParallelTrainingJobs": 2},
    },
    "HyperParameterTuningJobStatus": "Completed",
    "CreationTime": 0,
    "TrainingJobStatusCounters": {"Completed": 8},
    "ObjectiveStatusCounters": {"Succeeded": 8},
    "BestTrainingJob": {
        "TrainingJobName": "old-tune-007-abc",
        "TrainingJobArn": "arn:y",
        "CreationTime": 0,
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": {
            "model.lr": "0.0123",
            "model.optimizer": '"adam"',
            "data.batch_size": '"64"',
        },
        "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "val_acc", "Value": 0.91},
    },
}


def test_attach_reports_the_best_job_and_writes_best_yaml(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launch import tune, tune_sagemaker

    def plan(stubber: Stubber) -> None:
        for _ in range(2):
            stubber.add_response(
                "describe_hyper_parameter_tuning_job", BEST, {"HyperParameterTuningJobName": "old-tune"}
            )

    stub_session(tune_sagemaker, monkeypatch, plan)
    overrides = [*COMMON, "backend=sagemaker", "tune.attach=old-tune", f"paths.output_dir={tmp_path}"]
    record = tune.run(compose("launch_tune", overrides), overrides)
    assert (record["training_job"], record["value"]) == ("old-tune-007-abc", 0.91)
    # The best hyperparameters (JSON-quoted categoricals too) compose into a training config to rerun.
    best_yaml = (tmp_path / "best.yaml").read_text()
    assert "lr: 0.0123" in best_yaml and "optimizer: adam" in best_yaml and "batch_size: 64" in best_yaml


def test_hyperband_tuning_request(aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from launch import tune, tune_sagemaker

    made = stub_session(
        tune_sagemaker, monkeypatch, lambda s: s.add_client_error("create_hyper_parameter_tuning_job")
    )
    overrides = [
        *COMMON,
        "backend=sagemaker",
        "tune.job_name=hb-1",
        "tune.strategy=Hyperband",
        "tune.early_stopping_type=Off",
        "trainer.max_epochs=9",
        f"paths.output_dir={tmp_path}",
    ]
    with pytest.raises(Exception, match="create_hyper_parameter_tuning_job|CreateHyperParameterTuningJob"):
        tune.run(compose("launch_tune", overrides), overrides)
    config = made["params"]["CreateHyperParameterTuningJob"][0]["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.strategy=Hyperband"], "early_stopping_type must be Off"),
        (["tune.strategy=Grid"], "needs categorical parameters only"),
        (["tune.strategy=Sobol"], "tune.strategy='Sobol' must be one of"),
        (["tune.objective=accuracy"], "tune.objective='accuracy' is not a metric the training prints"),
        (["tune.space.lr.low=0"], "need 0 < low < high for log scale"),
        (["tune.warm_start.parents=[a]", "tune.warm_start.type=Warm"], "tune.warm_start.type='Warm' must be"),
    ],
)
def test_tuner_settings_are_checked_before_anything_is_sent(overrides: list[str], message: str) -> None:
    from launch.tune_sagemaker import settings

    with pytest.raises(ConfigError, match=message):
        settings(compose("launch_tune", overrides).tune)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launch.role=null"], "launch.role is not set"),
        (["launch.inputs=null"], "launch.inputs is not set"),
        (["launch.job_name=no_underscores"], "launch.job_name='no_underscores' must be"),
        (["launch.use_spot=true", "launch.max_wait=60"], "launch.max_wait=60 must be >= launch.max_run"),
        (["launch.distribution=mpi"], "launch.distribution='mpi' must be"),
        (["launch.sdk=v1"], "launch.sdk='v1' must be auto, v2 or v3"),
        ([f"launch.sdk={'v3' if SDK == 'v2' else 'v2'}"], r"pip install 'dogbreed\[sagemaker"),
    ],
)
def test_launch_settings_errors_name_the_key(
    aws: dict, tmp_path: Path, overrides: list[str], message: str
) -> None:
    from launch import train

    all_overrides = [*COMMON, *overrides, f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=message):
        train.run(compose("launch_train", all_overrides), all_overrides)
