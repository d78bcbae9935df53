"""Sweep reader and ablation report on a synthetic sweep dir with hand-computed answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from neuromf.report import build_report, config_diff, holm, main, t_interval
from neuromf.tracking.metrics import load_run, load_sweep

# arm -> seed -> best val/swd; final train/loss_raw is 10 * best (see make_run)
ARMS = {"u": {0: 0.10, 1: 0.12, 2: 0.14}, "x": {0: 0.20, 1: 0.25, 2: 0.30}}


def make_run(run_dir, pred, seed, best_swd, status="completed", with_metrics=True, with_status=True):
    """Write a run dir: overrides.yaml, sparse metrics.csv (train rows each step, val rows every 2 steps)."""
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [f"model.prediction_type={pred}", "loss.norm_p=1.0", f"seed={seed}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
    if with_metrics:
        lines = ["step,epoch,train/loss_u,val/swd"]
        swd = [best_swd + 0.3, best_swd + 0.1, best_swd, best_swd + 0.05]  # min at step 4, last != min
        for step in range(7):
            loss = "nan" if status == "diverged" and step >= 5 else f"{10 * best_swd + (6 - step) * 0.5}"
            lines.append(f"{step},0,{loss},")
            if step % 2 == 0:
                lines.append(f"{step},0,,{swd[step // 2]}")
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if with_status:
        st = {
            "status": status,
            "reason": "loss is NaN at step 5" if status == "diverged" else None,
            "objective_key": "val/swd",
            "objective": best_swd if status == "completed" else None,
            "global_step": 6,
            "overrides": overrides,
            "wandb_run_id": None,
        }
        (run_dir / "status.json").write_text(json.dumps(st))


@pytest.fixture
def sweep(tmp_path):
    sd = tmp_path / "sweep"
    job = 0
    for pred, seeds in ARMS.items():
        for seed, best in seeds.items():
            make_run(sd / str(job), pred, seed, best)
            job += 1
    make_run(sd / str(job), "x", 3, 0.01, status="diverged")  # would be the best if it were counted
    make_run(sd / str(job + 1), "u", 3, 0.0, with_metrics=False, with_status=False)  # crashed at start
    (sd / "multirun.yaml").write_text("{}\n")
    return sd


def test_load_run_reads_sparse_csv(sweep):
    r = load_run(sweep / "0")
    assert r.arm == {"loss.norm_p": "1.0", "model.prediction_type": "u"}
    assert r.seed == 0 and r.status == "completed" and r.ok
    assert r.best["val/swd"] == pytest.approx(0.10)
    assert r.final["val/swd"] == pytest.approx(0.15)  # last logged val row, not the last csv row
    assert r.final["train/loss_u"] == pytest.approx(1.0)
    assert list(r.series("val/swd").index) == [0, 2, 4, 6]


def test_load_sweep_marks_crashed_and_diverged(sweep):
    recs = load_sweep(sweep)
    assert [r.path.name for r in recs] == [str(i) for i in range(8)]  # natural order, report dirs ignored
    crashed = recs[7]
    assert crashed.status == "failed" and not crashed.ok
    assert any("no metrics.csv" in n for n in crashed.notes)
    assert recs[6].status == "diverged" and not recs[6].ok and "NaN" in recs[6].reason


def test_objective_recomputed_from_metrics(sweep):
    # an objective key other than status.json's: best (min) of that column in metrics.csv
    r = load_run(sweep / "1", objective_key="train/loss_u")
    assert r.objective == pytest.approx(10 * 0.12)
    assert load_run(sweep / "1", "train/loss_u", mode="max").objective == pytest.approx(1.2 + 6 * 0.5)


def test_bad_overrides_file_named(sweep):
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("a: [1\n")
    with pytest.raises(ValueError, match="0/.hydra/overrides.yaml"):
        load_run(sweep / "0")


def test_report_stats_ranking_and_files(sweep, tmp_path):
    res = build_report([sweep])
    arms = res["arms"].set_index("arm")
    u, x = "model.prediction_type=u", "model.prediction_type=x"  # loss.norm_p is constant: not in label
    assert list(res["arms"]["arm"]) == [u, x]
    assert list(res["arms"]["rank"]) == [1, 2]
    # hand-computed: u: 0.10, 0.12, 0.14 -> mean 0.12, sample std 0.02; x: 0.20, 0.25, 0.30 -> 0.25, 0.05
    assert arms.loc[u, "objective mean"] == pytest.approx(0.12)
    assert arms.loc[u, "objective std"] == pytest.approx(0.02)
    assert arms.loc[x, "objective mean"] == pytest.approx(0.25)
    assert arms.loc[x, "objective std"] == pytest.approx(0.05)
    assert arms.loc[u, "final train/loss_u mean"] == pytest.approx(1.2)
    assert arms.loc[x, "final train/loss_u std"] == pytest.approx(0.5)
    # failed / diverged runs excluded from n and marked
    assert arms.loc[u, "n"] == 3 and arms.loc[u, "n_runs"] == 4 and "seed 3: failed" in arms.loc[u, "excluded"]
    assert arms.loc[x, "n"] == 3 and "seed 3: diverged" in arms.loc[x, "excluded"]
    # the arms share seeds 0, 1, 2: seed-paired t-test on x - u = 0.10, 0.13, 0.16 (mean 0.13, sd 0.03, df 2)
    t = 0.13 / (0.03 / math.sqrt(3))
    assert arms.loc[x, "diff vs best"] == pytest.approx(0.13)
    assert arms.loc[x, "test"] == "paired t (3 seeds)"
    assert arms.loc[x, "p vs best"] == pytest.approx(2 * stats.t.sf(t, 2), rel=1e-6)
    half = stats.t.ppf(0.975, 2) * 0.03 / math.sqrt(3)
    assert arms.loc[x, "ci low"] == pytest.approx(0.13 - half, rel=1e-6)
    assert arms.loc[x, "p holm"] == pytest.approx(arms.loc[x, "p vs best"])  # one comparison
    assert np.isnan(arms.loc[u, "p vs best"])
    # t-interval of u's mean: 0.12 ± t(0.975, 2) * 0.02 / sqrt(3) = 0.12 ± 0.049683 (wider than the seeds' range)
    lo, hi = arms.loc[u, "objective ci low"], arms.loc[u, "objective ci high"]
    assert (lo, hi) == pytest.approx((0.12 - 0.049683, 0.12 + 0.049683), abs=1e-6)

    out = sweep / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, page):
        assert u in text and x in text and "diverged" in text and "failed" in text
    assert "0.12 ± 0.02" in md and "0.25 ± 0.05" in md and "final train/loss_raw" not in res["runs"].columns
    assert res["config_diff"].empty  # composed configs differ only by seed, which varies within arms
    # 3 figures before issue 21 (objective per arm, two curves) + the verdict and cost figures: all inlined, none linked
    assert page.count("data:image/png;base64,") == 5 and 'src="curve' not in page
    assert (out / "curve_val_swd.png").is_file() and (out / "objective_by_arm.png").is_file()


def test_report_never_overwrites(sweep, capsys):
    assert main([str(sweep)]) == 0
    first = (sweep / "report" / "report.md").read_text()
    assert main([str(sweep), "--metric", "train/loss_u"]) == 0
    prev = [p for p in sweep.iterdir() if p.name.startswith("report.prev-")]
    assert len(prev) == 1 and (prev[0] / "report.md").read_text() == first
    assert "`train/loss_u`" in (sweep / "report" / "report.md").read_text()
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in sweep.iterdir() if ".tmp-" in p.name]


def test_report_across_sweeps_pools_the_same_arm(sweep, tmp_path):
    """Two sweep dirs with the same arm (same overrides minus seed, configs holding only the seed): one arm."""
    other = tmp_path / "sweep2"
    make_run(other / "0", "u", 5, 0.5)
    make_run(other / "1", "u", 6, 0.7)
    res = build_report([sweep, other], out=tmp_path / "cmp")
    arms = res["arms"].set_index("arm")
    u = "model.prediction_type=u"
    assert list(res["arms"]["arm"]) == ["model.prediction_type=x", u]  # pooled u: mean 0.32 > x's 0.25
    assert arms.loc[u, "n"] == 5 and arms.loc[u, "seeds"] == "0, 1, 2, 5, 6"
    assert arms.loc[u, "objective mean"] == pytest.approx((0.10 + 0.12 + 0.14 + 0.5 + 0.7) / 5)
    assert arms.loc[u, "sweeps"] == "sweep, sweep2"
    assert "sweep, sweep2" in (tmp_path / "cmp" / "report.md").read_text()
    assert (tmp_path / "cmp" / "report.html").is_file()


def test_bad_sweep_dir_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(empty)):
        load_sweep(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sweep(tmp_path / "missing")
    assert main([str(empty)]) == 2
    assert "no runs in sweep dir" in capsys.readouterr().err
    assert not (empty / "report").exists()


def test_t_interval_known_answer_at_three_seeds():
    # by hand: mean 4.966 / 3 = 1.655333; squared deviations 0.00426844, 0.00000011, 0.00431211 -> s^2 = 0.00429033,
    # s = 0.0655006, s / sqrt(3) = 0.0378168; t(0.975, df 2) = 4.302653 (table) -> half-width 0.162713
    lo, hi = t_interval([1.590, 1.655, 1.721])
    assert lo == pytest.approx(1.655333 - 0.162713, abs=2e-6) and hi == pytest.approx(1.655333 + 0.162713, abs=2e-6)
    assert hi - lo > 1.721 - 1.590  # wider than the range of the three values (what a bootstrap gives at n = 3)
    # n = 2: t(0.975, 1) = 12.7062; mean 2, s = sqrt(2), s / sqrt(2) = 1
    assert t_interval([1.0, 3.0]) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-4)
    assert t_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in t_interval([1.0]))


def test_holm_textbook_values():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, np.nan, 0.6])
    assert np.isnan(out[1]) and list(out[[0, 2]]) == pytest.approx([1.0, 1.0])


def test_config_diff_finds_exactly_the_changed_keys():
    cfgs = [
        {"model": {"use_v_head": True, "w": 8}, "loss": {"p": 0.5}, "seed": 0},
        {"model": {"use_v_head": True, "w": 8}, "loss": {"p": 0.5}, "seed": 1},
        {"model": {"use_v_head": False, "w": 8}, "loss": {"p": 0.75}, "seed": 0},
    ]
    table, fixed, within = config_diff(cfgs, ["on", "on", "off"])
    assert list(table.index) == ["loss.p", "model.use_v_head", "seed"]
    assert table.loc["model.use_v_head"].tolist() == ["true", "false"]
    assert fixed == {"model.w": 8} and within == ["seed"]


def test_n1_arms_say_no_statistics(tmp_path):
    sd = tmp_path / "s"
    make_run(sd / "0", "u", 0, 0.1)
    make_run(sd / "1", "x", 0, 0.2)
    make_run(sd / "2", "x", 1, 0.3, status="running")
    res = build_report([sd])
    md = (sd / "report" / "report.md").read_text()
    assert "n = 1: no statistics" in md and "running (1 of 2)" in md and "mean ± std over seeds" not in md
    assert list(res["arms"]["test"]) == ["", "n = 1: no statistics"]


def test_an_arm_at_the_noise_level_is_flagged_not_ranked_silently():
    import pandas as pd

    from neuromf.report import gap_closed, untrained_warnings

    refs = {"noise": 1.15, "real": 0.15}
    assert gap_closed(1.15, refs) == pytest.approx(0.0) and gap_closed(0.15, refs) == pytest.approx(1.0)
    assert gap_closed(0.65, refs) == pytest.approx(0.5)
    # a higher-is-better metric carries its direction in the levels (coverage: noise 0, real 1)
    assert gap_closed(0.25, {"noise": 0.0, "real": 1.0}, mode="max") == pytest.approx(0.25)
    arms = pd.DataFrame({"arm": ["a", "b"], "objective mean": [0.3, 1.146]})
    warnings = untrained_warnings(arms, refs, "min")
    assert len(warnings) == 1 and "arm b" in warnings[0][1] and "0%" in warnings[0][1]
    assert untrained_warnings(arms, {}, "min") == []  # no reference levels: nothing claimed
