"""Atomic writes: readers see the old file or the new one, never half of one, and no temp file is left."""

from __future__ import annotations

import json
import os

import pytest

from dogbreed.atomic import replacing, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path) -> None:
    target = tmp_path / "reports" / "report.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_finished_write_replaces_the_file_with_the_usual_permissions(tmp_path) -> None:
    target = tmp_path / "new" / "trace.json"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()  # a file-name writer's target
        tmp.write_text("{}")
    assert target.read_text() == "{}" and [p.name for p in target.parent.iterdir()] == ["trace.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
