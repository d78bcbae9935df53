"""`python -m neuromf.bench` smoke: every case runs and gets a ratio to the flow-matching step (no timing checks)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neuromf.bench import format_table, main

ROOT = Path(__file__).resolve().parents[1]


def _check(payload, cases):
    assert {"device", "torch", "cuda", "command", "config", "results"} <= payload.keys()
    rows = {r["case"]: r for r in payload["results"]}
    assert set(rows) == set(cases)
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r["status"])
        assert r["ms_median"] > 0 and len(r["ms_all"]) == payload["config"]["steps"]
        assert r["ratio_ms_to_fm"] is not None and r["ratio_saved_to_fm"] is not None
        assert r["samples_per_s"] > 0
    assert rows["fm"]["ratio_ms_to_fm"] == 1.0
    assert "fm" in format_table(payload["results"])


def test_bench_in_process_minimal(tmp_path):
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "--preset",
                "cpu-small",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--strategies",
                "meanflow",
                "--jvp",
                "exact_fused",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _check(json.loads(out.read_text()), ["fm", "meanflow/exact_fused"])  # fm is added as the baseline


@pytest.mark.slow
def test_bench_cli_every_case(tmp_path):
    out = tmp_path / "sub" / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neuromf.bench",
            "--preset",
            "cpu-small",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    cases = ["fm", "jvp_only/exact"] + [f"{k}/{j}" for k in ("meanflow", "imf") for j in ("exact", "fd", "exact_fused")]
    _check(payload, cases)
    assert payload["command"].startswith("python -m neuromf.bench --preset cpu-small")
    assert not list(out.parent.glob("*.tmp"))
