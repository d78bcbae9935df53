import json

import numpy as np
import pytest

from neuromf.data.io import DataError
from neuromf.data.split import allocate, load_split, resolve_ratios, save_split, stratified_split


def make_rows(counts: dict[tuple[str, str], int]) -> list[dict]:
    rows = []
    for (ds, dx), n in counts.items():
        rows += [{"subject": f"{ds}_{dx}_{i:03d}", "dataset": ds, "diagnosis": dx} for i in range(n)]
    return rows


COUNTS = {("ixi", "CN"): 37, ("ixi", "AD"): 13, ("fomo", "CN"): 101, ("fomo", "AD"): 6, ("oasis", ""): 20}


def test_proportions_per_stratum_within_one_subject_and_no_leakage():
    rows = make_rows(COUNTS)
    split = stratified_split(rows, (0.85, 0.10, 0.05), seed=3)
    sets = {k: set(v) for k, v in split.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == {r["subject"] for r in rows}
    for (ds, dx), n in COUNTS.items():
        members = {r["subject"] for r in rows if r["dataset"] == ds and r["diagnosis"] == dx}
        for name, frac in zip(("train", "val", "test"), (0.85, 0.10, 0.05), strict=True):
            got = len(sets[name] & members)
            assert abs(got - frac * n) < 1.0, (ds, dx, name, got, frac * n)


def test_split_deterministic_in_seed():
    rows = make_rows(COUNTS)
    a = stratified_split(rows, seed=0)
    b = stratified_split(list(reversed(rows)), seed=0)  # input order does not matter
    c = stratified_split(rows, seed=1)
    assert a == b
    assert a["train"] != c["train"]


def test_allocate_largest_remainder():
    assert allocate(12, (0.85, 0.10, 0.05)) == [10, 1, 1]
    assert allocate(10, (0.9, 0.1, 0.0)) == [9, 1, 0]
    for n in range(1, 60):
        counts = allocate(n, (0.85, 0.10, 0.05))
        assert sum(counts) == n
        assert all(abs(c - f * n) < 1 for c, f in zip(counts, (0.85, 0.10, 0.05), strict=True))


def test_legacy_split_ratio():
    assert resolve_ratios(split_ratio=0.9) == pytest.approx((0.9, 0.1, 0.0))
    split = stratified_split(make_rows({("a", ""): 30}), resolve_ratios(split_ratio=0.9), seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (27, 3, 0)
    with pytest.raises(ValueError):
        resolve_ratios(split_ratio=1.5)


def test_duplicate_subject_rejected():
    rows = make_rows({("a", ""): 3})
    rows.append(dict(rows[0]))
    with pytest.raises(DataError, match="a__000"):
        stratified_split(rows)


def test_split_json_round_trip_and_unknown_subjects(tmp_path):
    rows = make_rows(COUNTS)
    split = stratified_split(rows, seed=0)
    path = save_split(tmp_path / "split.json", split, (0.85, 0.10, 0.05), 0)
    assert load_split(path, [r["subject"] for r in rows]) == split
    with pytest.raises(DataError, match="not in the manifest"):
        load_split(path, [r["subject"] for r in rows][:10])
    data = json.loads(path.read_text())
    data["val"].append(data["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="both"):
        load_split(path, [r["subject"] for r in rows])
    assert np.isclose(sum(resolve_ratios((8, 1, 1))), 1.0)
