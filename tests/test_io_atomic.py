"""neuromf/io_atomic.py: a write lands whole or not at all, and leaves no temp file."""

from __future__ import annotations

import json

import pytest

from neuromf.io_atomic import atomic_path, write_json_atomic, write_text_atomic


def test_text_and_json_land_whole_in_a_new_folder(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b.txt", "x\ny\n")
    assert path.read_text() == "x\ny\n"
    write_json_atomic(tmp_path / "s.json", {"n": 1, "p": tmp_path})  # a Path is written as str
    assert json.loads((tmp_path / "s.json").read_text()) == {"n": 1, "p": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.txt", "s.json"]


def test_a_failed_write_keeps_the_previous_file_and_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "status.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_the_temp_file_keeps_the_real_suffix_last(tmp_path):
    with atomic_path(tmp_path / "img.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path and tmp.name.startswith(".tmp-")
        tmp.write_bytes(b"\x1f\x8b")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"\x1f\x8b"
