"""The shim reads both runners' variables: the training toolkit's and SDK v3's ``sm_train.sh`` driver's.

Fast unit tests of ``launch.shim``; the slow lanes beside this file run the real runners.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launch import shim
from launch.overrides import from_v3_hyperparameter_name, v3_hyperparameter_name

# What v3's scripts/environment.py exports for a two-host job (values as its env file renders them).
V3_ENV = {
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_OUTPUT_DIR": "/opt/ml/output",
    "SM_OUTPUT_FAILURE": "/opt/ml/output/failure",
    "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    "SM_MASTER_ADDR": "algo-1",
    "SM_MASTER_PORT": "7777",
    "SM_HOSTS": '["algo-1", "algo-2"]',
    "SM_CURRENT_HOST": "algo-2",
    "SM_CURRENT_HOST_RANK": "1",
    "SM_HOST_COUNT": "2",
    "SM_NUM_GPUS": "0",
}


def test_v3_style_names_become_dotted_hydra_keys() -> None:
    argv = ["--model__lr", "0.05", "--trainer__max_epochs", "2", "--model", "mobilenet_v2"]
    assert shim.parse_args(argv) == ["model.lr=0.05", "trainer.max_epochs=2", "model=mobilenet_v2"]


def test_v3_hyperparameter_names_round_trip_and_refuse_what_a_shell_cannot_export() -> None:
    for key in ("model.lr", "callbacks.early_stopping.patience", "seed", "data.batch-size"):
        name = v3_hyperparameter_name(key)
        assert name.replace("_", "").replace("-", "").isalnum() and from_v3_hyperparameter_name(name) == key
    for key in ("++callbacks.debugger", "~callbacks.profiler", "a__b", "model lr"):
        with pytest.raises(ValueError, match="SDK v3's job driver"):
            v3_hyperparameter_name(key)


def test_the_rendezvous_comes_from_the_v3_driver_when_it_sets_one() -> None:
    plan = shim.translate(["--model", "resnet18"], V3_ENV)
    assert plan.env == {"MASTER_ADDR": "algo-1", "MASTER_PORT": "7777", "NODE_RANK": "1"}
    assert "++trainer.num_nodes=2" in plan.overrides


def test_without_the_v3_variables_the_rendezvous_is_derived_from_the_hosts() -> None:
    toolkit = {k: v for k, v in V3_ENV.items() if k not in ("SM_MASTER_ADDR", "SM_MASTER_PORT")}
    del toolkit["SM_CURRENT_HOST_RANK"]
    assert shim.translate([], toolkit).env == {
        "MASTER_ADDR": "algo-1",
        "MASTER_PORT": "29500",
        "NODE_RANK": "1",
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SM_OUTPUT_FAILURE": "/v3/failure", "SM_OUTPUT_DIR": "/toolkit"}, "/v3/failure"),
        ({"SM_OUTPUT_DIR": "/relocated/output"}, "/relocated/output/failure"),
        ({"DOGBREED_FAILURE_FILE": "/mine", "SM_OUTPUT_FAILURE": "/v3/failure"}, "/mine"),
        ({}, shim.FAILURE_FILE),
    ],
    ids=["v3-driver", "training-toolkit", "explicit", "default"],
)
def test_the_failure_file_is_where_the_runner_reads_it(env: dict, expected: str) -> None:
    assert shim.failure_file(env) == Path(expected)
