"""``python -m serve.predict DIR --out …``: every image once, bad files as rows, accuracy on an ImageFolder
split, a killed run resumed, and the two-stage runner giving the artifact's own numbers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from image_bytes import png_header_only
from PIL import Image

from serve.predict import local_predictor, main
from serve.rows import PredictionsFile
from serve.score_folder import IMAGE_EXTENSIONS, RemoteScorer, find_images, score

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--precision", "fp32", "--max-batch-size", "4", "--no-warmup", "--decode-workers", "2"]


@pytest.fixture(scope="module")
def model_pt(trained_run) -> Path:
    return Path(trained_run["output_dir"]) / "model" / "model.pt"


@pytest.fixture(scope="module")
def expected(model_pt, synthetic_root) -> dict[str, str]:
    """The library's own prediction (dogbreed.predict, the checkpoint-free path) for every test image."""
    from dogbreed.predict import load_model

    predictor = load_model(model_pt)
    paths = sorted((synthetic_root / "test").rglob("*.jpg"))
    return {str(p): predictor.predict(p)[0].label for p in paths}


def read_rows(path: Path) -> list[dict]:
    with PredictionsFile.open(path) as out:
        return out.rows


def test_image_extensions_are_image_folders():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from dogbreed.data.layout import IMAGE_EXTENSIONS as LIBRARY

    assert IMAGE_EXTENSIONS == LIBRARY == IMG_EXTENSIONS


def test_find_images_walks_folders_globs_and_files(tmp_path):
    for name in ["b/2.JPG", "b/1.png", "a/deep/3.webp", "a/notes.txt", "top.jpeg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_images([str(tmp_path), str(tmp_path / "b" / "1.png"), str(tmp_path / "missing.jpg")])
    rel = [(os.path.relpath(s.path, tmp_path), s.folder_label) for s in found]
    assert rel == [
        ("top.jpeg", None),
        ("a/deep/3.webp", "a"),
        ("b/1.png", "b"),
        ("b/2.JPG", "b"),
        ("missing.jpg", None),
    ]
    assert [os.path.relpath(s.path, tmp_path) for s in find_images([f"{tmp_path}/**/*.pn?"])] == ["b/1.png"]
    with pytest.raises(RuntimeError, match=r"nothing\*\.jpg: no images there \(looked for \.jpg"):
        find_images([str(tmp_path / "nothing*.jpg")])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_image_folder_split_scores_every_image_with_accuracy(
    model_pt, synthetic_root, expected, tmp_path, capsys, suffix
):
    out = tmp_path / f"predictions{suffix}"
    split = synthetic_root / "test"
    # .jsonl with the warm-up picking the batch size (and the decoder/thread split left to the defaults)
    settings = FAST if suffix == ".csv" else ["--precision", "fp32", "--max-batch-size", "3"]
    assert main([str(split), "--model", str(model_pt), "--out", str(out), "--top-k", "3", *settings]) == 0
    rows = read_rows(out)
    assert {r["path"]: r["label"] for r in rows} == expected and len(rows) == len(expected)
    assert [r["path"] for r in rows] == sorted(expected)  # input order, ImageFolder's
    assert all(
        r["error"] is None and len(r["top_k"]) == 3 and r["top_k"][0]["label"] == r["label"] for r in rows
    )
    if suffix == ".csv":  # what a spreadsheet or pandas reads
        with open(out, newline="") as f:
            first = next(csv.DictReader(f))
        assert first["error"] == "" and json.loads(first["top_k"])[0]["label"] == first["label"]
    stdout = capsys.readouterr().out
    right = sum(label == Path(p).parent.name for p, label in expected.items())
    assert right > len(expected) / 2  # a trained model, not chance (4 classes)
    assert f"accuracy={right / len(expected):.4f}" in stdout.splitlines()
    assert f"against the folder labels of {len(expected)} image(s)" in stdout
    assert any(
        line.startswith("images_per_s=") and float(line.split("=")[1]) > 0 for line in stdout.splitlines()
    )


def test_bad_files_become_rows_and_the_run_goes_on(model_pt, synthetic_root, tmp_path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(synthetic_root / "test", folder)
    good = sorted(folder.rglob("*.jpg"))
    whole = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "not-an-image.jpg").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    (folder / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "readme.txt").write_text("not scored: not an image extension")
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(folder / "odd-but-fine.png")
    out = tmp_path / "p.jsonl"
    assert main([str(folder), "--model", str(model_pt), "--out", str(out), *FAST]) == 1
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    errors = {name: r["error"] for name, r in rows.items() if r["error"]}
    assert set(rows) == {p.name for p in good} | {
        "truncated.jpg",
        "not-an-image.jpg",
        "empty.png",
        "bomb.png",
        "dangling.jpg",
        "odd-but-fine.png",
    }
    assert "truncated or corrupt" in errors["truncated.jpg"]
    assert errors["not-an-image.jpg"].startswith("file is not a")  # …an image / …a JPEG, PNG… image
    assert "empty" in errors["empty.png"]
    assert errors["bomb.png"].endswith("downscale it")  # over the pixel limit, read from the header
    assert errors["dangling.jpg"] == "cannot read (No such file or directory)"
    assert len(errors) == 5 and rows["odd-but-fine.png"]["label"] and rows["truncated.jpg"]["label"] is None
    stdout = capsys.readouterr().out
    assert "(5 error(s))" in stdout and f"the folder labels of {len(good)} image(s)" in stdout


def test_images_under_folders_that_are_not_classes_are_scored_but_left_out_of_accuracy(
    model_pt, synthetic_root, tmp_path, capsys
):
    folder = tmp_path / "split"
    shutil.copytree(synthetic_root / "test", folder)
    (folder / "holiday").mkdir()
    shutil.copy(next(folder.rglob("*.jpg")), folder / "holiday" / "beach.jpg")
    assert main([str(folder), "--model", str(model_pt), "--out", str(tmp_path / "p.csv"), *FAST]) == 0
    stdout = capsys.readouterr().out
    assert "; 1 in other folders left out" in stdout
    # A folder of photos with no class folders: no accuracy at all.
    assert (
        main([str(folder / "holiday"), "--model", str(model_pt), "--out", str(tmp_path / "h.csv"), *FAST])
        == 0
    )
    assert "accuracy" not in capsys.readouterr().out


def many_images(folder: Path, source: Path, n: int) -> list[Path]:
    folder.mkdir()
    data = source.read_bytes()
    paths = [folder / f"{i:03d}.jpg" for i in range(n)]
    for p in paths:
        p.write_bytes(data)
    return paths


def rows_on_disk(path: Path) -> int:
    return max(0, path.read_text().count("\n") - 1) if path.exists() else 0


def start_child(model_pt: Path, folder: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "serve.predict", str(folder), "--model", str(model_pt), "--out", str(out)]
    cmd += ["--precision", "fp32", "--max-batch-size", "2", "--no-warmup", "--decode-workers", "1"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_after(child: subprocess.Popen, out: Path, rows: int, sig: int, timeout: float = 180.0) -> str:
    """Send ``sig`` once ``out`` holds more than ``rows`` rows; the child's output."""
    deadline = time.monotonic() + timeout
    while rows_on_disk(out) <= rows:
        assert child.poll() is None, f"child ended before it was stopped:\n{child.stdout.read()}"
        assert time.monotonic() < deadline, "child wrote no rows in time"
        time.sleep(0.02)
    child.send_signal(sig)
    output, _ = child.communicate(timeout=60)
    return output


def test_a_killed_run_resumes_and_scores_every_image_exactly_once(model_pt, synthetic_root, tmp_path, capsys):
    """Ctrl-C stops cleanly (exit 130, rows flushed); SIGKILL may tear the last row; reruns fill the rest."""
    paths = many_images(tmp_path / "photos", next((synthetic_root / "test").rglob("*.jpg")), 120)
    out = tmp_path / "p.csv"

    interrupted = start_child(model_pt, tmp_path / "photos", out)
    log = stop_after(interrupted, out, 2, signal.SIGINT)
    assert interrupted.returncode == 130, log
    assert "interrupted: run the same command again" in log
    after_sigint = read_rows(out)
    assert 2 < len(after_sigint) < len(paths)

    killed = start_child(model_pt, tmp_path / "photos", out)
    stop_after(killed, out, len(after_sigint) + 2, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    after_kill = read_rows(out)
    assert len(after_sigint) + 2 < len(after_kill) < len(paths)
    assert [r["path"] for r in after_kill[: len(after_sigint)]] == [r["path"] for r in after_sigint]

    assert main([str(tmp_path / "photos"), "--model", str(model_pt), "--out", str(out), *FAST]) == 0
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(map(str, paths))  # each exactly once
    assert all(r["error"] is None for r in rows)
    assert f"{len(after_kill)} already there" in capsys.readouterr().out

    assert main([str(tmp_path / "photos"), "--model", str(model_pt), "--out", str(out), *FAST]) == 0
    assert read_rows(out) == rows  # nothing left to do: nothing added
    assert "0 image(s) scored now" in capsys.readouterr().out


def test_an_endpoint_scores_the_same_rows_through_concurrent_requests(model_pt, synthetic_root, tmp_path):
    """The endpoint path (any ``bytes -> prediction`` function; here the handler's) gives the local rows."""
    images = find_images([str(synthetic_root / "test")])
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    with PredictionsFile.open(tmp_path / "remote.jsonl") as out:
        summary = score(
            [*images, *find_images([str(bad)])],
            RemoteScorer(local_predictor(str(model_pt), 5), 4, "test"),
            out,
        )
        remote = out.rows
    assert summary.scored == len(images) + 1 and summary.errors == 1
    assert (
        main(
            [
                str(synthetic_root / "test"),
                "--model",
                str(model_pt),
                "--out",
                str(tmp_path / "l.jsonl"),
                *FAST,
            ]
        )
        == 0
    )
    local = read_rows(tmp_path / "l.jsonl")
    assert [r["label"] for r in remote[:-1]] == [r["label"] for r in local]
    assert remote[-1]["path"] == str(bad) and "file is not a" in remote[-1]["error"]


def test_a_folder_without_out_prints_each_image_as_before(model_pt, synthetic_root, expected, capsys):
    split = synthetic_root / "test"
    assert main([str(split / "*" / "*.jpg"), "--model", str(model_pt), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = sorted(expected)[0]
    assert lines[0].startswith(f"{first}: {expected[first]} ") and len(lines) == 2 * len(expected)


def test_the_two_stage_runner_gives_the_artifacts_numbers(model_pt, synthetic_root):
    """Preprocessing in the decoder threads and the network on the batch: bit-identical to predict_images."""
    from serve.inference import decode_image
    from serve.predict import load_artifact
    from serve.runner import Runner

    model = load_artifact(str(model_pt), "cpu")
    runner = Runner(model, "fp32")
    images = [decode_image(p.read_bytes()) for p in sorted((synthetic_root / "test").rglob("*.jpg"))[:5]]
    images.append(torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8))
    with torch.inference_mode():
        artifact = model.predict_images(images)
    assert torch.equal(runner.forward([runner.preprocess(i) for i in images]), artifact)
    assert runner.preprocess(images[0]).shape == (1, 3, model.crop_size, model.crop_size)


def test_an_unreachable_endpoint_gives_error_rows_not_a_crash(synthetic_root, tmp_path, capsys):
    out = tmp_path / "p.csv"
    split = str(synthetic_root / "test")
    assert main([split, "--endpoint", "http://127.0.0.1:9", "--out", str(out), "--timeout", "5"]) == 1
    rows = read_rows(out)
    assert len(rows) == len(find_images([split]))
    assert all(
        r["label"] is None and "cannot reach http://127.0.0.1:9/invocations" in r["error"] for r in rows
    )
    assert "accuracy" not in capsys.readouterr().out  # the endpoint does not tell its class names


def test_progress_reports_rate_eta_and_errors():
    import io

    from serve.score_folder import Progress

    stream = io.StringIO()
    progress = Progress(1000, stream, every_s=0)
    progress.started -= 10  # as if 10 s ago
    progress.update(250, 1)
    progress.update(1000, 3, final=True)
    first, last = stream.getvalue().splitlines()
    assert first.startswith("250/1,000 images (25%), 25.0 images/s, ETA 0m30s, 1 error")
    assert last.startswith("1,000/1,000 images (100%), 100.0 images/s, 3 errors")


def test_an_image_that_breaks_its_batch_costs_only_its_own_row(tmp_path):
    """A batch whose forward pass fails is retried image by image (as the server's batcher does)."""
    from serve.score_folder import Source

    class Picky:
        workers, chunk = 2, 4
        calls: list[int] = []

        def prepare(self, path: str) -> str:
            return path

        def infer(self, items: list[str]) -> list[dict]:
            self.calls.append(len(items))
            if "poison" in items:
                raise ValueError("shape mismatch")
            return [{"label": f"L-{i}", "probability": 1.0, "top_k": []} for i in items]

        def describe(self) -> str:
            return "picky"

    names = ["a", "b", "poison", "c", "d", "e"]
    with PredictionsFile.open(tmp_path / "p.jsonl") as out:
        summary = score([Source(n) for n in names], Picky(), out)
        rows = out.rows
    assert [r["path"] for r in rows] == names and summary.errors == 1
    assert rows[2]["error"] == "inference failed: ValueError: shape mismatch"
    assert [r["label"] for r in rows if r["path"] != "poison"] == ["L-a", "L-b", "L-c", "L-d", "L-e"]
    assert Picky.calls == [4, 1, 1, 1, 1, 2]  # the broken batch of four split up, the next one whole
