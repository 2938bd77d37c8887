"""`python -m dogbreed.data check`: every kind of damage is found and named by path; quarantine moves,
never deletes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.data import DatasetError, ImageFolderDataModule
from dogbreed.data.__main__ import main
from dogbreed.data.check import run_check


def classes(root: Path, split: str = "train") -> list[Path]:
    return sorted(p for p in (root / split).iterdir() if p.is_dir())


def jpgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


@pytest.fixture
def damaged(synthetic_root: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the tiny dataset with one file per kind of damage; returns (root, kind -> relative path)."""
    root = Path(shutil.copytree(synthetic_root, tmp_path / "ds"))
    c0, c1, c2, _ = classes(root)
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    made: dict[str, str] = {}

    victim = jpgs(c0)[0]
    victim.write_bytes(victim.read_bytes()[:-300])
    made["truncated"] = rel(victim)
    (c0 / "notes.jpg").write_text("this is not a picture")
    made["not_image"] = rel(c0 / "notes.jpg")
    (c1 / "empty.jpg").write_bytes(b"")
    made["zero_byte"] = rel(c1 / "empty.jpg")
    png = c1 / "corrupt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png)
    data = bytearray(png.read_bytes())
    data[data.find(b"IDAT") + 40] ^= 0xFF
    png.write_bytes(bytes(data))
    made["undecodable"] = rel(png)
    Image.new("RGB", (12, 9), "red").save(c1 / "tiny.jpg")
    made["too_small"] = rel(c1 / "tiny.jpg")
    Image.new("CMYK", (64, 64), (0, 50, 100, 0)).save(c2 / "cmyk.jpg")
    made["cmyk"] = rel(c2 / "cmyk.jpg")
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(c2 / "deep.png")
    made["16bit"] = rel(c2 / "deep.png")
    Image.new("P", (64, 64)).save(c2 / "palette.png", transparency=0)
    made["palette"] = rel(c2 / "palette.png")
    shutil.copy(jpgs(c0)[1], c2 / "copy_within.jpg")
    made["duplicate"] = rel(c2 / "copy_within.jpg")
    leak = root / "test" / c0.name / "leak.jpg"
    shutil.copy(jpgs(c0)[2], leak)
    made["duplicate_across_splits"] = rel(leak)
    (c0 / "README.txt").write_text("scraped from the web")
    made["stray_text"] = rel(c0 / "README.txt")
    return root, made


def by_path(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for issue in report.issues:
        out.setdefault(issue.path, []).append(issue)
    return out


def test_clean_dataset_passes(synthetic_root: Path, capsys):
    report = run_check(synthetic_root, workers=1)
    assert report.issues == [] and not report.blocking
    assert report.images == report.files == 4 * (12 + 4 + 4)
    assert report.imbalance()["train"] == {
        "classes": 4,
        "images": 48,
        "min": 12,
        "min_class": "001.Circles",
        "median": 12,
        "max": 12,
        "max_class": "004.Checkerboard",
    }
    assert main(["check", str(synthetic_root), "--quiet"]) == 0
    assert "OK: nothing would break training" in capsys.readouterr().out


def test_every_damage_is_found_and_named(damaged):
    root, made = damaged
    report = run_check(root, workers=2)  # the parallel path (process pool)
    assert report.workers == 2
    found = by_path(report)
    expect = {
        "truncated": ("error", "truncated", "truncated"),
        "not_image": ("error", "not_image", "not an image"),
        "zero_byte": ("error", "zero_byte", "0 bytes"),
        "undecodable": ("error", "undecodable", "broken data stream"),
        "too_small": ("warning", "too_small", "12x9 px"),
        "cmyk": ("warning", "unusual_mode", "CMYK"),
        "16bit": ("warning", "unusual_mode", "16-bit"),
        "palette": ("warning", "unusual_mode", "palette with transparency"),
        "duplicate": ("warning", "duplicate", "same bytes as train/001.Circles/"),
        "duplicate_across_splits": ("warning", "duplicate_across_splits", "across splits"),
        "stray_text": ("warning", "not_image", "training skips it"),
    }
    for name, (severity, kind, text) in expect.items():
        issues = found.get(made[name], [])
        assert [(i.severity, i.kind) for i in issues] == [(severity, kind)], (name, issues)
        assert text in issues[0].message, (name, issues[0].message)
    assert "labelled '001.Circles' there" in found[made["duplicate"]][0].message
    assert sorted(report.blocking_lines()) == sorted(
        f"{made[k]}: {found[made[k]][0].message}"
        for k in ("truncated", "not_image", "zero_byte", "undecodable")
    )
    assert len(report.issues) == len(expect)
    # Broken files do not count as images of their class.
    assert report.counts["train"]["001.Circles"] == 12 - 1


def test_truncation_is_caught_even_when_pillow_is_told_to_tolerate_it(damaged):
    from PIL import ImageFile

    root, made = damaged
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        report = run_check(root, workers=1)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left alone
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert made["truncated"] in {i.path for i in report.blocking}


def test_structure_and_imbalance(synthetic_root: Path, tmp_path: Path):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "ds"))
    c0, c1, c2, c3 = classes(root)
    shutil.rmtree(root / "valid" / c3.name)
    for f in jpgs(root / "test" / c2.name):
        f.unlink()
    for f in jpgs(c1)[1:]:
        f.unlink()
    report = run_check(root, workers=1, max_imbalance=5)
    lines = report.blocking_lines()
    assert any(f"not in {root / 'valid'}: {c3.name}" in line for line in lines), lines
    assert any(f"empty class folder (no images): {root / 'test' / c2.name}" in line for line in lines), lines
    imbalance = [i for i in report.issues if i.kind == "imbalance"]
    assert [(i.path, i.severity) for i in imbalance] == [("train", "warning")]
    assert f"12 images in {c3.name} vs 1 in {c1.name}" in imbalance[0].message
    assert report.imbalance()["train"]["median"] == 12


def test_cli_table_json_and_exit_codes(damaged, capsys):
    root, made = damaged
    assert main(["check", str(root), "--quiet"]) == 1
    table = capsys.readouterr().out
    for path in made.values():
        assert path in table
    assert "FAILED: 4 problems would break training" in table and "--quarantine DIR" in table
    assert main(["check", str(root), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["errors"] == 4 and data["warnings"] == 7
    assert {i["path"] for i in data["issues"]} == set(made.values())
    assert data["splits"]["train"]["classes"] == 4


def test_warnings_only_pass_unless_strict(synthetic_root: Path, tmp_path: Path, capsys):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "ds"))
    Image.new("CMYK", (64, 64)).save(classes(root)[0] / "cmyk.jpg")
    assert main(["check", str(root), "--quiet"]) == 0
    assert main(["check", str(root), "--quiet", "--strict"]) == 1
    assert main(["check", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_quarantine_moves_broken_files_keeping_paths(damaged, tmp_path: Path, capsys):
    root, made = damaged
    files_before = sorted(p.name for p in root.rglob("*") if p.is_file())
    q = tmp_path / "quarantine"
    assert main(["check", str(root), "--quarantine", str(q), "--quiet"]) == 0  # nothing blocking is left
    assert "quarantined 5 broken files (moved, not deleted)" in capsys.readouterr().out
    broken = [made[k] for k in ("truncated", "not_image", "zero_byte", "undecodable", "stray_text")]
    for rel in broken:
        assert (q / rel).is_file() and not (root / rel).exists()
    assert (q / made["zero_byte"]).stat().st_size == 0
    kept = sorted(p.name for p in root.rglob("*") if p.is_file()) + sorted(
        p.name for p in q.rglob("*") if p.is_file()
    )
    assert sorted(kept) == files_before  # nothing deleted
    assert not run_check(root, workers=1).blocking
    ImageFolderDataModule(root, num_workers=0)  # trainable now


def test_quarantine_reports_classes_it_empties(synthetic_root: Path, tmp_path: Path):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "ds"))
    folder = classes(root, "test")[0]
    for f in jpgs(folder):
        f.write_bytes(b"")
    report = run_check(root, workers=1, quarantine=tmp_path / "q")
    assert any(f"empty class folder (no images): {folder}" in line for line in report.blocking_lines())
    with pytest.raises(ValueError, match="inside the split folder"):
        run_check(root, workers=1, quarantine=root / "train" / "q")


def test_datamodule_verify_uses_the_full_check(damaged):
    root, made = damaged
    dm = ImageFolderDataModule(root, num_workers=0, verify=True)  # the cheap check passes: classes are fine
    with pytest.raises(DatasetError) as err:
        dm.setup("fit")
    for kind in ("truncated", "not_image", "zero_byte", "undecodable"):
        assert made[kind] in str(err.value)
    assert "--quarantine" in str(err.value)


@pytest.mark.parametrize("command", ["download", "check", "show"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: python -m dogbreed.data {command}" in capsys.readouterr().out


def test_module_entry_point_exit_status(damaged):
    root, made = damaged
    run = subprocess.run(
        [sys.executable, "-m", "dogbreed.data", "check", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["errors"] == 4
