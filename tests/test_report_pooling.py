"""The report across sweep dirs: runs of the same arm (resolved config equal apart from seed and launch / logging /
path keys) pool into one arm, with seed-paired t-intervals across the dirs; the final test-split table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from neuromf.report import arm_identity, build_report, pool_ignored
from neuromf.tracking.metrics import load_run

T_975_DF2 = 4.302653  # Student t quantile, 0.975, 2 degrees of freedom (table value)


def fake_run(run_dir: Path, overrides: list[str], config: dict, objective: float, final: dict | None = None) -> None:
    """A completed run dir: overrides, composed config, status.json and a metrics.csv with the objective."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.csv").write_text(f"step,epoch,val/swd\n2,0,{objective}\n")
    status = {"status": "completed", "objective_key": "val/swd", "objective": objective, "overrides": overrides}
    (run_dir / "status.json").write_text(json.dumps(status))
    if final is not None:
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / "final.json").write_text(json.dumps(final))


def config(v_head: bool, seed: int, sweep: str, lr: float = 1e-3) -> dict:
    """A composed config: what makes the arm (model, optim) and what does not (seed, logger, paths, threads)."""
    return {
        "seed": seed,
        "sweep_name": sweep,
        "torch_threads": 1 if sweep == "a" else 4,
        "model": {"use_v_head": v_head, "prediction_type": "x"},
        "optim": {"lr": lr},
        "data": {"latent_dir": f"/data/{sweep}/latents", "batch_size": 4},
        "logger": {"wandb": {"dir": f"/scratch/{sweep}", "enabled": sweep == "a"}},
        "objective": "val/swd",
        "objective_mode": "min",
    }


# arm -> [(sweep dir, seed, objective)]: v-head on / off over seeds 0, 1 in sweep a and seed 2 in sweep b
ON = [("a", 0, 1.0), ("a", 1, 1.2), ("b", 2, 1.1)]
OFF = [("a", 0, 1.5), ("a", 1, 1.6), ("b", 2, 1.8)]


@pytest.fixture
def two_sweeps(tmp_path):
    jobs = {"a": 0, "b": 0}
    for v_head, runs in ((True, ON), (False, OFF)):
        for sweep, seed, value in runs:
            # sweep a names the arm by its group, sweep b by the key: the resolved configs are the same
            ov = [f"v_head={'res0' if v_head else 'off'}"] if sweep == "a" else [f"model.use_v_head={v_head}"]
            final = {"checkpoint": "best.ckpt", "metrics": {"test/swd/nfe1": value + 0.1, "test/swd/nfe2": value}}
            fake_run(tmp_path / sweep / str(jobs[sweep]), [*ov, f"seed={seed}"], config(v_head, seed, sweep), value,
                     final if v_head else None)  # fmt: skip
            jobs[sweep] += 1
    # another learning rate in sweep b: its own arm, never pooled with the others
    fake_run(tmp_path / "b" / "9", ["model.use_v_head=True", "optim.lr=0.01", "seed=0"],
             config(True, 0, "b", lr=0.01), 3.0)  # fmt: skip
    return tmp_path / "a", tmp_path / "b"


def test_identity_ignores_seed_logging_paths_and_threads_only():
    assert all(pool_ignored(k) for k in ("seed", "logger.wandb.dir", "data.latent_dir", "torch_threads"))
    assert not any(pool_ignored(k) for k in ("optim.lr", "model.use_v_head", "data.batch_size", "objective"))


def test_runs_of_one_arm_in_two_sweep_dirs_pool_into_one_arm(two_sweeps, tmp_path):
    a, b = two_sweeps
    assert arm_identity(load_run(a / "0")) == arm_identity(load_run(b / "0"))  # other overrides, same config
    assert arm_identity(load_run(b / "0")) != arm_identity(load_run(b / "9"))
    res = build_report([a, b], out=tmp_path / "report")
    arms = res["arms"].set_index("arm")
    assert len(arms) == 3 and list(arms["n"]) == [3, 3, 1]
    on, off = res["arms"]["arm"].iloc[0], res["arms"]["arm"].iloc[1]
    assert "v_head=res0" in on and "v_head=off" in off  # labelled by the first sweep's overrides
    assert arms.loc[on, "seeds"] == "0, 1, 2" and arms.loc[on, "sweeps"] == "a, b"
    assert arms.loc[on, "objective mean"] == pytest.approx(1.1)
    # t-interval of the mean of 1.0, 1.2, 1.1: s = 0.1, 1.1 ± 4.302653 * 0.1 / sqrt(3) = 1.1 ± 0.248414
    assert (arms.loc[on, "objective ci low"], arms.loc[on, "objective ci high"]) == pytest.approx(
        (1.1 - 0.248414, 1.1 + 0.248414), abs=1e-6
    )
    # seeds pair across the dirs: off - on = 0.5, 0.4, 0.7 -> mean 0.533333, s = 0.152753, df 2
    assert arms.loc[off, "test"] == "paired t (3 seeds)"
    assert arms.loc[off, "diff vs best"] == pytest.approx(0.533333, abs=1e-6)
    half = T_975_DF2 * 0.152753 / 3**0.5
    assert (arms.loc[off, "ci low"], arms.loc[off, "ci high"]) == pytest.approx(
        (0.533333 - half, 0.533333 + half), abs=1e-5
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "pooled into one arm" in md and "Student t 95% CI" in md
    # logger / path / thread keys differ between the pooled runs, but are no confound between the arms
    assert "resolves to: model.use_v_head, optim.lr." in md and "a confound" not in md


def test_the_final_table_shows_test_values_and_the_selection(two_sweeps, tmp_path):
    a, b = two_sweeps
    res = build_report([a, b], out=tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    final = md.split("## Final evaluation (test split)")[1].split("\n## ")[0]
    assert "selection: val val/swd (best of the validation passes)" in final
    assert "test/swd/nfe1 (↓)" in final and "test/swd/nfe2 (↓)" in final
    # v-head arm: nfe2 = 1.0, 1.2, 1.1 -> 1.1 ± 0.1 [0.8516, 1.348]; nfe1 = each + 0.1 -> 1.2 ± 0.1 [0.9516, 1.448]
    assert "1.1 ± 0.1 [0.8516, 1.348]" in final and "1.2 ± 0.1 [0.9516, 1.448]" in final
    assert "4 run(s) have no final evaluation" in final  # the off arm and the other learning rate
    assert (tmp_path / "report" / "final.csv").is_file()
    assert res["arms"]["n"].sum() == 7


def test_without_final_files_the_report_says_the_objective_is_the_selection(tmp_path):
    fake_run(tmp_path / "s" / "0", ["seed=0"], config(True, 0, "a"), 1.0)
    build_report([tmp_path / "s"])
    md = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "No run has a final evaluation" in md and "python -m neuromf.evaluate" in md


def test_the_seeds_of_one_arm_pool_whatever_their_config_derives_from_the_seed(tmp_path):
    """A composed config holds keys derived from the seed (data.seed: ${seed}, the shuffling draws): resolved, they
    differ between the seeds of one arm. A sweep of 2 arms x 2 seeds is 2 arms of n = 2 (it read as 4 arms of n = 1,
    no statistics); the split seed, which is not the seed, still tells arms apart."""
    runs = [(True, 0, 1.0), (True, 1, 1.2), (False, 0, 1.5), (False, 1, 1.6), (True, 0, 1.3)]
    for job, (v_head, seed, value) in enumerate(runs):
        cfg = config(v_head, seed, "a")
        cfg["data"] |= {"seed": "${seed}", "split_seed": 1 if job == 4 else 0}  # written unresolved, as Hydra does
        ov = [f"v_head={'res0' if v_head else 'off'}", f"seed={seed}", *(["data.split_seed=1"] if job == 4 else [])]
        fake_run(tmp_path / "s" / str(job), ov, cfg, value)
    arms = build_report([tmp_path / "s"], out=tmp_path / "report")["arms"]
    assert sorted(arms["n"]) == [1, 2, 2] and len(arms) == 3
    assert pool_ignored("data.seed") and pool_ignored("model.seed") and not pool_ignored("data.split_seed")
