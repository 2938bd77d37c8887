"""Run with SDK v3's Python: submit a job through ``sagemaker.train.ModelTrainer``, record its request.

    python tests/toolkit/v3_request.py SPEC.json REQUEST.json

SPEC holds what the launcher decided (staged ``source_dir``, hyperparameters, metric definitions, image,
role, bucket, channels); this builds the ModelTrainer the way ``launch.sdk=v3`` does (SourceCode with
``entry_script`` + ``requirements``, Compute, InputData per channel), calls ``train(wait=False)`` against
``AWS_ENDPOINT_URL`` (moto_server), and writes the CreateTrainingJob parameters botocore sent. ModelTrainer
uploads the code and its own driver (``sm_drivers``: ``sm_train.sh``, the Python drivers) as channels,
so the request plus that S3 content is everything a v3 job sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from capture import captured


def main(spec_path: str, out_path: str) -> None:
    import boto3
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.shapes import MetricDefinition, OutputDataConfig
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, SourceCode, StoppingCondition

    spec = json.loads(Path(spec_path).read_text())
    session = Session(boto_session=boto3.Session(region_name=spec["region"]), default_bucket=spec["bucket"])
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=spec["role"],
        base_job_name=spec["base_job_name"],
        training_image=spec["image"],
        source_code=SourceCode(
            source_dir=spec["source_dir"], entry_script=spec["entry_script"], requirements="requirements.txt"
        ),
        compute=Compute(instance_type=spec["instance_type"], instance_count=1, volume_size_in_gb=50),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=spec["max_run"]),
        output_data_config=OutputDataConfig(s3_output_path=spec["output_path"]),
        hyperparameters=spec["hyperparameters"],
        environment=spec.get("environment") or {},
    ).with_metric_definitions(
        [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in spec["metric_definitions"]]
    )
    with captured("CreateTrainingJob") as sent:
        trainer.train(
            input_data_config=[InputData(channel_name=k, data_source=v) for k, v in spec["channels"].items()],
            wait=False,
            logs=False,
        )
    if not sent:
        raise SystemExit("ModelTrainer.train sent no CreateTrainingJob request")
    Path(out_path).write_text(json.dumps(sent, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
