"""The per-objective table of a sweep=objectives dir (benchmarks/objectives_table.py) on hand-made runs with known
answers, and the two-mode data as a latent store the trainer reads (benchmarks/mode_balance.py --write-store)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


table_mod = _load("objectives_table")
mb = _load("mode_balance")

COLLAPSED = 1.6


def make_run(run_dir: Path, loss: str, seed: int, fd1: float, ci: tuple[float, float], steps: int, extra=()):
    (run_dir / ".hydra").mkdir(parents=True)
    lines = [f"loss={loss}", f"seed={seed}", "sweep=objectives", *extra]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {x}\n" for x in lines))
    last = {"val/feat3d_fd/nfe1": fd1, "val/feat3d_fd/nfe1_ci_lo": ci[0], "val/feat3d_fd/nfe1_ci_hi": ci[1]}
    last |= {"val/feat3d_fd/nfe10": fd1 - 0.5, "val/recall/nfe1": 0.25, "val/coverage/nfe1": 0.5}
    summary = {"last": last, "reference": {"feat3d_fd": {"real": 0.5, "collapsed": COLLAPSED}}}
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "summary.json").write_text(json.dumps(summary))
    budget = {"steps": steps, "budget_steps": steps, "budget_flops": 300.0 * 10, "fm_step_flops": 10}
    (run_dir / "budget.json").write_text(json.dumps(budget | {"step_cost_vs_fm": {"all": 300 / steps}}))


def test_the_table_pools_each_objective_over_its_seeds(tmp_path, capsys):
    sd = tmp_path / "sweep"
    runs = [("fm", 0, 1.70, (1.65, 1.75), 300), ("fm", 1, 1.72, (1.66, 1.80), 300), ("fm", 2, 1.74, (1.7, 1.8), 300)]
    runs += [("alphaflow", 0, 1.40, (1.35, 1.45), 200), ("alphaflow", 1, 1.50, (1.45, 1.62), 200)]
    for job, (loss, seed, fd1, ci, steps) in enumerate(runs):
        make_run(sd / str(job), loss, seed, fd1, ci, steps)
    (sd / "9").mkdir()  # an unfinished run: left out
    assert table_mod.main([str(sd), "--out", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| alphaflow") or line.startswith("| fm")]
    assert [r[0] for r in rows] == ["| alphaflow", "| fm"]  # ranked by the mean 1-step objective
    alpha, fm = rows
    half = stats.t.ppf(0.975, 1) * math.sqrt(0.005) / math.sqrt(2)  # sd of (1.4, 1.5) = sqrt(0.005)
    assert alpha[1:5] == ["2", "200", "1.50", f"1.450 [{1.45 - half:.3f}, {1.45 + half:.3f}]"]
    assert alpha[6] == "1 of 2 seeds"  # seed 0's interval [1.35, 1.45] clears 1.6, seed 1's [1.45, 1.62] does not
    assert fm[3] == "1.00" and fm[6] == "0 of 3 seeds" and fm[7].startswith("1.220 [")  # 10-step: 1.2, 1.22, 1.24
    assert "collapsed 1.600" in lines[-1]
    assert table_mod.main([str(tmp_path / "none")]) == 2
    assert "not a sweep dir" in capsys.readouterr().err
    # a second sweep dir of the same loss with an override: its own arm, named by what only it sets
    make_run(tmp_path / "fmu" / "0", "fm", 0, 1.3, (1.2, 1.4), 300, extra=["loss.time_sampler.distribution=uniform"])
    assert table_mod.main([str(sd), str(tmp_path / "fmu"), "--out", str(tmp_path / "t2.md")]) == 0
    lines = (tmp_path / "t2.md").read_text().splitlines()
    names = [line.split(" | ")[0] for line in lines if line.startswith(("| a", "| f"))]
    assert names == ["| fm loss.time_sampler.distribution=uniform", "| alphaflow", "| fm"]


def test_the_two_mode_data_as_a_latent_store(tmp_path):
    from neuromf.data.store import LatentStore, read_manifest

    out = mb.write_store(tmp_path / "two_mode")
    rows = read_manifest(out)
    assert len(rows) == 256 and sum(r["subject"].startswith("m1-") for r in rows) == 96  # 0.375 minority
    x, labels = mb.dataset()
    store = LatentStore(out)
    assert store.stats["shape"] == [1, 16, 16, 16]
    for i in (0, 1, 255):  # the volumes as written, each under its mode's subject id
        latent, _ = store.load(rows[i]["subject"])
        assert latent.shape == (1, 16, 16, 16) and latent.equal(x[i])
        assert rows[i]["subject"] == f"m{int(labels[i])}-{i:04d}"
    with pytest.raises(FileExistsError):
        mb.write_store(out)


def test_single_run_dirs_and_the_curve_of_each_run(tmp_path):
    """A run dir stands for a sweep of one run; --curve lists each validation's 1-step value, '*' where its
    interval lies wholly below the collapsed level (1.6)."""
    for name, budget, hist in (
        ("long", 3000, [(10, 1.7, 1.65, 1.75), (20, 1.5, 1.45, 1.59)]),
        ("short", 1500, [(5, 1.62, 1.55, 1.70)]),
    ):
        run = tmp_path / name
        make_run(run, "alphaflow", 0, hist[-1][1], hist[-1][2:], 20, extra=[f"budget.fm_steps={budget}"])
        summary = json.loads((run / "eval" / "summary.json").read_text())
        summary["history"] = [{"step": s, "val/feat3d_fd/nfe1": v, "val/feat3d_fd/nfe1_ci_lo": lo,
                               "val/feat3d_fd/nfe1_ci_hi": hi} for s, v, lo, hi in hist]  # fmt: skip
        (run / "eval" / "summary.json").write_text(json.dumps(summary))
        budget_json = json.loads((run / "budget.json").read_text()) | {"budget_fm_steps": budget}
        (run / "budget.json").write_text(json.dumps(budget_json))
    out = tmp_path / "t.md"
    assert table_mod.main([str(tmp_path / "long"), str(tmp_path / "short"), "--curve", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| alphaflow")]
    # the main table, ranked by the final 1-step value: 1.5 (its interval clears 1.6), then 1.62
    assert rows[0].startswith("| alphaflow budget.fm_steps=3000 | 1 | 20 |") and "| 1 of 1 seeds |" in rows[0]
    assert rows[1].startswith("| alphaflow budget.fm_steps=1500 | 1 | 20 |") and "| 0 of 1 seeds |" in rows[1]
    assert rows[2] == "| alphaflow budget.fm_steps=1500 | 0 | 1500 | 20 | 5: 1.620 [1.550, 1.700] |"
    assert rows[3] == (
        "| alphaflow budget.fm_steps=3000 | 0 | 3000 | 20 | 10: 1.700 [1.650, 1.750]; 20: 1.500 [1.450, 1.590]* |"
    )
