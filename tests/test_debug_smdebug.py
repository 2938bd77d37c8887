"""smdebug side of the Debugger: NumPy-2 fix, local and SageMaker-configured hooks, create_trial,
analyze CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("smdebug", reason="the smdebug extra is not installed")

from test_debug_callback import TinyNet, blobs, fit  # noqa: E402

from dogbreed.debug.__main__ import main  # noqa: E402
from dogbreed.debug.smdebug_bridge import patch_numpy2  # noqa: E402


@pytest.fixture(autouse=True)
def no_singleton_hook():
    """smdebug keeps the job's hook in a module global; never let it leak between tests."""
    from smdebug.core.singleton_utils import del_hook

    del_hook()
    yield
    del_hook()


def test_numpy2_fix_writes_the_same_bytes() -> None:
    patch_numpy2()
    from smdebug.core import writer
    from smdebug.core.tfevent import util

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto = util.make_tensor_proto(array, "t")
    assert proto.tensor_content == array.tobytes() and [d.size for d in proto.tensor_shape.dim] == [2, 3]
    assert writer.make_tensor_proto is util.make_tensor_proto
    assert list(util.make_tensor_proto(np.array(["a", "bc"]), "s").string_val) == [b"a", b"bc"]


@pytest.fixture(scope="module")
def zero_lr_trial(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One lr=0 run with a local smdebug hook saving every step."""
    from smdebug.core.singleton_utils import del_hook

    del_hook()
    tmp = tmp_path_factory.mktemp("smd")
    model = TinyNet(lr=0.0)
    report, trainer, _ = fit(
        tmp, model, blobs(96), blobs(64, seed=1), epochs=4, batch_size=16, interval=1, smdebug="local"
    )
    return {
        "dir": tmp / "debug-output",
        "report": report,
        "losses": list(model.train_losses),
        "steps": trainer.global_step,
    }


def test_create_trial_reads_the_losses_back(zero_lr_trial: dict) -> None:
    from smdebug import modes
    from smdebug.trials import create_trial

    assert zero_lr_trial["report"]["smdebug"] == {"out_dir": str(zero_lr_trial["dir"]), "sagemaker": False}
    trial = create_trial(str(zero_lr_trial["dir"]))
    train = trial.tensor("train_loss_output_0")
    steps = train.steps(mode=modes.TRAIN)
    assert steps == list(range(zero_lr_trial["steps"])) == list(range(24))
    assert [float(train.value(s, mode=modes.TRAIN)) for s in steps] == pytest.approx(
        zero_lr_trial["losses"], rel=1e-6
    )
    assert len(trial.tensor("val_loss_output_0").steps(mode=modes.EVAL)) == 4  # one 64-sample batch per epoch
    grads = set(trial.tensor_names(collection="gradients"))
    assert grads == {f"gradient/TinyNet_net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def test_analyze_runs_the_same_rules_over_the_trial(
    zero_lr_trial: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "analysis"
    assert (
        main(
            [
                "analyze",
                str(zero_lr_trial["dir"]),
                "-o",
                str(out),
                "--fail-on-issues",
                "--set",
                "Overfit.ratio_threshold=5",
            ]
        )
        == 1
    )
    printed = capsys.readouterr().out
    assert "LossNotDecreasing: IssuesFound" in printed and "debugger.html" in printed
    offline = json.loads((out / "debugger.json").read_text())
    live = {r["name"]: r for r in zero_lr_trial["report"]["rules"]}
    for result in offline["rules"]:
        if result["name"] in (
            "LossNotDecreasing",
            "WeightUpdateRatio",
            "VanishingGradient",
            "ExplodingTensor",
        ):
            assert (result["status"], result["step"]) == (
                live[result["name"]]["status"],
                live[result["name"]]["step"],
            ), result
    assert offline["series"]["val_loss"] == zero_lr_trial["report"]["series"]["val_loss"]
    assert offline["params"]["Overfit"]["ratio_threshold"] == 5
    assert (out / "debugger.html").is_file()
    assert (
        main(
            [
                "analyze",
                str(zero_lr_trial["dir"]),
                "-o",
                str(out),
                "--no-html",
                "--set",
                "LossNotDecreasing=off",
            ]
        )
        == 0
    )
    assert "LossNotDecreasing" not in {
        r["name"] for r in json.loads((out / "debugger.json").read_text())["rules"]
    }


def test_analyze_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 2
    assert "not an smdebug trial" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--set", "Overfit"]) == 2
    assert "RULE.param=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "analyze" in capsys.readouterr().out


def test_inside_a_sagemaker_job_the_configured_hook_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smdebug reads the job's DebugHookConfig from SMDEBUG_CONFIG_FILE_PATH
    (SageMaker writes it to /opt/ml)."""
    from smdebug import modes
    from smdebug.trials import create_trial

    config = {
        "LocalPath": str(tmp_path / "tensors"),
        "HookParameters": {"save_interval": "2"},
        "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}},
            {"CollectionName": "gradients"},
        ],
    }
    (tmp_path / "debughookconfig.json").write_text(json.dumps(config))
    monkeypatch.setenv("SMDEBUG_CONFIG_FILE_PATH", str(tmp_path / "debughookconfig.json"))
    report, _, _ = fit(
        tmp_path, TinyNet(), blobs(64), blobs(32, seed=1), epochs=2, batch_size=16, smdebug="auto"
    )
    assert report["smdebug"] == {"out_dir": str(tmp_path / "tensors"), "sagemaker": True}
    assert not (tmp_path / "debug-output").exists()
    trial = create_trial(str(tmp_path / "tensors"))
    assert trial.tensor("train_loss_output_0").steps(mode=modes.TRAIN) == list(
        range(8)
    )  # the job's interval: 1
    grad = trial.tensor_names(collection="gradients")[0]
    assert trial.tensor(grad).steps(mode=modes.TRAIN) == [0, 2, 4, 6]  # the job's interval: 2
