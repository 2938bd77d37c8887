"""The predictions file (serve/rows.py): both formats round-trip odd paths, a torn last row is cut off on
reopening, foreign files are refused, and an endpoint answer becomes the same row as a local score."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from serve.rows import COLUMNS, PredictionsFile, RowsError, error_row, prediction_row, row_from_answer

PREDICTION = {
    "label": "001.Affenpinscher",
    "probability": 0.931,
    "top_k": [
        {"label": "001.Affenpinscher", "probability": 0.931},
        {"label": "036.Briard", "probability": 0.032},
    ],
}
# A comma, quotes, a newline and a name that is not UTF-8 (as os.listdir returns it): each breaks naive CSV.
ODD_PATHS = [
    "plain/dog.jpg",
    'a,b "c".jpg',
    "two\nlines.png",
    os.fsdecode(b"caf\xe9.jpg"),
    "page\x0cbreak.jpg",
]


def rows_for(paths: list[str]) -> list[dict]:
    return [
        prediction_row(p, PREDICTION) if i % 2 == 0 else error_row(p, "bad\n file")
        for i, p in enumerate(paths)
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_round_trip_through_both_formats(tmp_path, suffix):
    path = tmp_path / f"predictions{suffix}"
    rows = rows_for(ODD_PATHS)
    with PredictionsFile.open(path) as out:
        assert out.rows == []
        out.write(rows[:2])
        out.write(rows[2:])
    with PredictionsFile.open(path) as again:
        assert again.rows == rows
    assert rows[1]["error"] == "bad file"  # one line, whatever the exception said
    if suffix == ".csv":
        assert path.read_bytes().startswith(b"path,label,probability,top_k,error\n")
        assert b"caf\xe9.jpg" in path.read_bytes()  # the file name's own bytes
    else:
        assert [set(json.loads(line)) for line in path.read_text().splitlines()] == [set(COLUMNS)] * len(
            ODD_PATHS
        )


@pytest.mark.parametrize(
    ("suffix", "cut"), [(".csv", 1), (".csv", 7), (".csv", "inside-newline"), (".jsonl", 1), (".jsonl", 7)]
)
def test_a_torn_last_row_is_cut_off_and_the_rest_kept(tmp_path, suffix, cut):
    """What a kill in the middle of a write leaves: the complete rows survive, the torn one is dropped."""
    path = tmp_path / f"predictions{suffix}"
    rows = rows_for(ODD_PATHS)
    with PredictionsFile.open(path) as out:
        out.write(rows[:2])
    complete = path.read_bytes()
    with PredictionsFile.open(path) as out:
        out.write(rows[2:3])  # the path with a newline inside
    torn_row = path.read_bytes()[len(complete) :]
    keep = torn_row.index(b"\n") + 1 if cut == "inside-newline" else len(torn_row) - cut
    path.write_bytes(complete + torn_row[:keep])
    with PredictionsFile.open(path) as out:
        assert out.rows == rows[:2]
        out.write(rows[2:])
    assert path.read_bytes().startswith(complete)
    with PredictionsFile.open(path) as again:
        assert again.rows == rows


def test_a_csv_killed_before_its_header_is_complete_starts_over(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("path,lab")
    with PredictionsFile.open(path) as out:
        assert out.rows == []
        out.write(rows_for(ODD_PATHS[:1]))
    assert path.read_text().startswith("path,label,probability,top_k,error\nplain/dog.jpg,")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("p.txt", "", r"name it \*\.csv or \*\.jsonl"),
        ("p.csv", "id,score\n1,2\n", "does not start with the header"),
        (
            "p.csv",
            "path,label,probability,top_k,error\na.jpg,x,high,[],\n",
            "line 2 is not a predictions row",
        ),
        ("p.jsonl", '{"path": "a.jpg"}\n', "line 1 is not a predictions row"),
        ("p.jsonl", "not json\n", "line 1 is not a predictions row"),
    ],
)
def test_files_that_are_not_predictions_are_refused_untouched(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RowsError, match=match):
        PredictionsFile.open(path)
    assert path.read_text() == content


def test_an_endpoint_answer_becomes_the_row_a_local_score_gives(trained_run, synthetic_root):
    """A Batch Transform ``.out`` file holds one answer of code/inference.py: same columns, same values."""
    from serve.inference import input_fn, model_fn, output_fn, predict_fn

    model_dir = Path(trained_run["output_dir"]) / "model"
    image = next((synthetic_root / "test").glob("*/*.jpg"))
    model = model_fn(str(model_dir))
    body = output_fn(predict_fn(input_fn(image.read_bytes(), "image/jpeg"), model), "application/json")
    (prediction,) = predict_fn(input_fn(image.read_bytes(), "image/jpeg"), model)
    assert row_from_answer("x.jpg", body) == prediction_row("x.jpg", prediction)
    assert row_from_answer("x.jpg", body.encode())["label"] == prediction["label"]
    assert row_from_answer("x.jpg", json.dumps({"error": "body is empty"})) == error_row(
        "x.jpg", "body is empty"
    )
    bad = row_from_answer("x.jpg", b"<html>502</html>")
    assert bad["label"] is None and bad["error"].startswith("unexpected answer")


def test_two_runs_cannot_append_to_one_file_at_once(tmp_path):
    path = tmp_path / "p.jsonl"
    with PredictionsFile.open(path) as first:
        with pytest.raises(RowsError, match="another run is writing it"):
            PredictionsFile.open(path)
        first.write(rows_for(ODD_PATHS[:1]))
    with PredictionsFile.open(path) as after:
        assert len(after.rows) == 1
