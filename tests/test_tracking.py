"""``logger=mlflow``: a real MLflow store on disk (SQLite in mlruns/), read back by MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogbreed.config import compose


def test_default_tracking_uri_is_mlruns_unless_the_environment_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose("train", ["logger=mlflow", f"paths.root_dir={tmp_path}"])
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert set(cfg.logger) == {"tensorboard", "csv", "mlflow"}  # the CSV keeps the run page's curves
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/team"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", arn)
    assert compose("train", ["logger=mlflow"]).logger.mlflow.tracking_uri == arn


def test_flat_params_are_the_training_keys(cfg_factory):
    from dogbreed.tracking import flat_params

    params = flat_params(cfg_factory(["model.lr=0.05"]))
    assert (
        params["model.lr"] == 0.05 and params["data.batch_size"] == 16 and params["trainer.max_epochs"] == 2
    )
    assert not any(k.startswith(("callbacks.", "logger.", "paths.")) for k in params)


@pytest.mark.slow  # a whole run plus MLflow's SQLite store (10 s): the opt-in logger=mlflow
def test_a_run_round_trips_through_mlflow(cfg_factory, tmp_path: Path, monkeypatch):
    from mlflow import MlflowClient

    from dogbreed.train import train

    monkeypatch.chdir(tmp_path)  # MLflow puts a local store's artifacts in ./mlruns/<experiment id>
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_factory(
        [
            "logger=mlflow",
            f"paths.root_dir={tmp_path}",
            "trainer.max_epochs=3",
            "model.lr=0.05",
            "callbacks.debugger=null",
            "callbacks.profiler=null",
        ]  # fmt: skip
    )
    metrics, objects = train(cfg)
    (logger,) = [lg for lg in objects["trainer"].loggers if type(lg).__name__ == "MLFlowLogger"]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")  # a fresh client: what is on disk
    (run,) = client.search_runs([client.get_experiment_by_name("dogbreed").experiment_id])
    assert run.info.run_id == logger.run_id and run.info.status == "FINISHED"
    params = run.data.params
    assert (
        params["model.lr"] == "0.05"
        and params["data.batch_size"] == "16"
        and params["backbone"] == "mobilenet_v2"
    )
    val_acc = client.get_metric_history(run.info.run_id, "val_acc")
    assert len(val_acc) == 3  # one point per epoch
    assert run.data.metrics["final/test_acc"] == pytest.approx(metrics["test_acc"])
    assert run.data.metrics["final/val_acc"] == pytest.approx(metrics["val_acc"])  # the best checkpoint's
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reports", "model", "metrics.json", "config"} <= artifacts
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"reports/index.html", "reports/results.png", "reports/evaluation.html"} <= reports
    assert {"model/model.pt", "model/model.tar.gz"} <= model
    local = Path(client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path / "back")))
    assert local.read_bytes() == Path(metrics["model_pt"]).read_bytes()
    page = (Path(cfg.paths.output_dir) / "reports" / "index.html").read_text()
    assert "<h2>MLflow</h2>" in page and run.info.run_id in page
