"""The report's evaluation-interval section: each arm's objective with its own bootstrap interval, the arms whose
difference from the best is smaller than it, and the k-NN reference set named with its size."""

import json
import math

import pytest

from neuromf.report import build_report
from neuromf.report.sections.intervals import Z95, interval_table
from neuromf.tracking.metrics import load_sweep, run_interval

KEY = "val/feat3d_fd/nfe1"


def _run(run_dir, pred, values, se):
    """One seed of arm `pred`: evaluations at steps 2, 4, 6 with `values` and a bootstrap se of each."""
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [f"model.prediction_type={pred}", "seed=0"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = f"seed: 0\nobjective: {KEY}\nobjective_mode: min\nmodel:\n  prediction_type: {pred}\n"  # as resolved
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    lines = [f"step,epoch,{KEY},{KEY}_se,{KEY}_ci_lo,{KEY}_ci_hi"]
    for i, (v, s) in enumerate(zip(values, se, strict=True)):
        lines.append(f"{2 * (i + 1)},{i},{v},{s},{v - 2 * s},{v + 2 * s}")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    status = {"status": "completed", "objective_key": KEY, "objective": min(values), "overrides": overrides}
    (run_dir / "status.json").write_text(json.dumps(status))
    knn = {"set": "train", "size": 64, "k": 3, "description": "training latents (seeded subset)"}
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "summary.json").write_text(json.dumps({"knn_reference": knn, "reference": {}}))


@pytest.fixture
def sweep(tmp_path):
    sd = tmp_path / "sweep"
    _run(sd / "0", "u", [5.0, 3.0, 4.0], [0.5, 0.4, 0.3])  # best 3.0 (se 0.4)
    _run(sd / "1", "x", [4.0, 3.3, 3.5], [0.2, 0.3, 0.1])  # 3.3 (se 0.3): |0.3| < 1.96 * 0.5 = 0.98
    _run(sd / "2", "v", [9.0, 8.0, 7.0], [0.1, 0.2, 0.3])  # 7.0 (se 0.3): 4.0 > 0.98
    (sd / "multirun.yaml").write_text("{}\n")
    return sd


def test_run_interval_is_the_best_evaluations(sweep):
    r = load_sweep(sweep)[0]
    assert run_interval(r, KEY, "min") == pytest.approx({"value": 3.0, "se": 0.4, "ci_lo": 2.2, "ci_hi": 3.8})
    assert run_interval(r, KEY, "max") == pytest.approx({"value": 5.0, "se": 0.5, "ci_lo": 4.0, "ci_hi": 6.0})
    assert run_interval(r, "val/kid/nfe1") is None


def test_interval_table_flags_differences_within_the_interval(sweep):
    records = load_sweep(sweep)
    arms = [r.arm["model.prediction_type"] for r in records]
    table = interval_table(records, arms, ["u", "x", "v"], KEY, "min").set_index("arm")
    half = Z95 * math.sqrt(0.3**2 + 0.4**2)
    assert table.loc["u", "Δ vs best"] == "best"
    assert table.loc["x", "Δ vs best"] == "+0.3" and table.loc["x", "Δ vs the interval"] == f"smaller (±{half:.3g})"
    assert table.loc["v", "Δ vs the interval"].startswith("larger")
    assert table.loc["x", "eval 95% CI (one run)"] == "[2.7, 3.9]"


def test_report_shows_intervals_and_names_the_knn_set(sweep, tmp_path):
    res = build_report([sweep], out=tmp_path / "report", real=False)
    md = (res["out"] / "report.md").read_text()
    assert "Evaluation interval of val/feat3d_fd/nfe1" in md
    assert "arm model.prediction_type=x: its difference from the best (+0.3) is smaller than the evaluation" in md
    assert "model.prediction_type=v: its difference" not in md
    assert "against 64 training latents (seeded subset)" in md


def test_sweep_summary_has_the_objective_direction_and_its_interval(sweep):
    from neuromf.sweep.summary import summarize_sweep

    rows = {r["job"]: r for r in summarize_sweep(sweep)}
    assert rows["0"]["objective_mode"] == "min" and rows["0"]["objective"] == 3.0
    assert rows["0"]["objective_se"] == pytest.approx(0.4) and rows["2"]["objective_se"] == pytest.approx(0.3)
    assert "objective_se" in (sweep / "sweep_summary.csv").read_text().splitlines()[0]
