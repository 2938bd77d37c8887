"""launch.transform's merged predictions from what the real code/inference.py answers in a Batch Transform
job (SageMaker sets SAGEMAKER_BATCH=true there) equal `python -m serve.predict DIR --out`'s rows for the same
folder: same paths, order, columns, labels and probabilities, and an undecodable image is an error row in
both (the handler answers it 200 ``{"error"}`` in a transform job, so SageMaker keeps the answer and the job
goes on). Needs torch: not in the v3 lane (tests/test_launch_transform.py is)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aws import transform_platform

from dogbreed.config import compose

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def test_merged_transform_answers_match_local_folder_scoring(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_run: dict, synthetic_root: Path
) -> None:
    from launch import transform
    from serve import inference
    from serve.predict import main as predict_main
    from serve.rows import PredictionsFile

    photos = tmp_path / "photos"
    shutil.copytree(synthetic_root / "test", photos)
    (photos / next(p.name for p in photos.iterdir()) / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    run_dir = Path(trained_run["output_dir"])

    monkeypatch.setenv("SAGEMAKER_BATCH", "true")  # what the platform sets in a transform job's container
    model = inference.model_fn(str(run_dir / "model"))

    def container(body: bytes) -> bytes | None:
        """The inference toolkit's request path: input_fn → predict_fn → output_fn; an exception is an
        error status (SageMaker then writes no .out)."""
        try:
            batch = inference.input_fn(body, "application/x-image")
            return inference.output_fn(inference.predict_fn(batch, model), "application/json").encode()
        except inference.RequestError:
            return None

    real_start = transform.start_transform

    def start_and_run(session, job) -> None:
        real_start(session, job)
        transform_platform(job.name, container)

    monkeypatch.setattr(transform, "start_transform", start_and_run)
    overrides = [f"launch.role={ROLE}", "launch.bucket=bkt", "launch.wait=true", f"transform.model={run_dir}",
                 f"transform.images={photos}", f"paths.output_dir={tmp_path / 'sm'}"]  # fmt: skip
    record = transform.run(compose("launch_transform", overrides))
    assert record["status"] == "Completed" and record["errors"] == 1

    local = tmp_path / "local.csv"
    predict_main([str(photos), "--model", str(run_dir / "model" / "model.pt"), "--out", str(local)])
    with PredictionsFile.open(record["predictions"]) as merged, PredictionsFile.open(local) as scored:
        assert [r["path"] for r in merged.rows] == [r["path"] for r in scored.rows]
        assert len(merged.rows) == sum(1 for p in photos.rglob("*.jpg"))
        for got, want in zip(merged.rows, scored.rows, strict=True):
            assert set(got) == set(want)
            assert (got["label"], got["error"] is None) == (want["label"], want["error"] is None), got["path"]
            if want["error"] is None:
                assert got["probability"] == pytest.approx(want["probability"], abs=1e-3)
                assert [k["label"] for k in got["top_k"]] == [k["label"] for k in want["top_k"]]
    (broken,) = [r for r in merged.rows if r["error"] is not None]
    assert broken["path"].endswith("broken.jpg") and "no answer" not in broken["error"]
