"""Report sections on synthetic sweep dirs with known answers: the Optuna study (a real journal study with
COMPLETE, PRUNED and FAIL trials), cost, provenance, reference levels, the confound warning and the gallery."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from test_report_sweep import make_run

from neuromf.report import IMPORTANCE_SEED, SAVED_COL, build_report, cost_table, provenance_table
from neuromf.tracking.metrics import load_sweep

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TrialState = optuna.trial.TrialState


def _config(run_dir: Path, cfg: dict) -> None:
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))


def _status(run_dir: Path, **fields) -> None:
    path = run_dir / "status.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def _png(path: Path, value: float) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.full((8, 8), value), vmin=0, vmax=1, cmap="gray")


# ------------------------------------------------------------------------------------------------ optuna
# (optim.lr, optim.beta2, value) of the COMPLETE trials 0-3; trial 0 is the enqueued baseline, trial 2 the best
DONE = [(3e-4, 0.999, 0.50), (1e-4, 0.95, 0.40), (5e-5, 0.92, 0.20), (1e-3, 0.99, 0.90)]
DISTS = {
    "optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "optim.beta2": optuna.distributions.FloatDistribution(0.9, 0.999),
}


def _trial_run(sd: Path, job: int, lr: float, best: float, status: str, accelerator: str) -> Path:
    run = sd / str(job)
    make_run(run, "x", 0, best, status=status)
    (run / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={lr}\n")
    _config(run, {"seed": 0, "trainer": {"accelerator": accelerator, "devices": 2, "num_nodes": 1}})
    _status(run, overrides=[f"optim.lr={lr}"])
    return run


def optuna_sweep(sd: Path, accelerator: str = "cpu") -> Path:
    """An lr_optuna-like sweep dir with its journal study: trials 0-3 COMPLETE, trial 4 PRUNED at step 20 of 100
    after 36 s on 2 devices (36 / 20 x 80 x 2 / 3600 = 0.08 device-hours saved), trial 5 FAIL (job gone)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sd.mkdir(parents=True)
    sweeper = {"storage": "auto", "study_name": "lr_optuna"}
    (sd / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    storage = JournalStorage(JournalFileBackend(str(sd / "optuna.journal")))
    study = optuna.create_study(study_name="lr_optuna", storage=storage, direction="minimize")
    for job, (lr, b2, value) in enumerate(DONE):
        run = _trial_run(sd, job, lr, value, "completed", accelerator)
        attrs = {"run_dir": str(run)} | ({"baseline": True} if job == 0 else {})
        params = {"optim.lr": lr, "optim.beta2": b2}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=DISTS, value=value, user_attrs=attrs))
    pruned = _trial_run(sd, 4, 1e-5, 0.8, "pruned", accelerator)
    _status(pruned, pruned_step=20, global_step=20)
    (pruned / "progress.json").write_text(json.dumps({"total_steps": 100, "elapsed_s": 36.0, "step": 20}))
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params={"optim.lr": 1e-5, "optim.beta2": 0.9},
            distributions=DISTS,
            intermediate_values={10: 0.95, 20: 0.85},
            user_attrs={"run_dir": str(pruned)},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"optim.lr": 2e-4, "optim.beta2": 0.98},
            distributions=DISTS,
            user_attrs={"fail_reason": "stale: job 123 is gone"},
        )
    )
    return sd


@pytest.fixture(scope="module")
def optuna_report(tmp_path_factory):
    sd = optuna_sweep(tmp_path_factory.mktemp("opt") / "lr_optuna")
    res = build_report([sd], real=False)
    return sd, res, (sd / "report" / "report.md").read_text(), (sd / "report" / "report.html").read_text()


def test_optuna_trials_table_states_and_best(optuna_report):
    sd, _, md, page = optuna_report
    assert "## Optuna study lr_optuna" in md
    assert "trials by state: COMPLETE 4, PRUNED 1, FAIL 1" in md
    assert "Best trial 2: value 0.2, params {'optim.lr': 5e-05, 'optim.beta2': 0.92}" in md
    table = md.split("## Optuna study lr_optuna")[1]
    rows = {
        int(r.split("|")[1]): r for r in table.splitlines() if r.startswith("| ") and r.split("|")[1].strip().isdigit()
    }
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert "| COMPLETE | 0.5 |" in rows[0] and "baseline" in rows[0]
    assert "| PRUNED |" in rows[4] and "| 20 | 0.08 |" in rows[4]  # pruned at step 20, 0.08 device-h saved
    assert "| FAIL |" in rows[5] and "stale: job 123 is gone" in rows[5]
    summary = json.loads((sd / "report" / "summary.json").read_text())["optuna"][0]
    assert summary["states"] == {"COMPLETE": 4, "PRUNED": 1, "FAIL": 1} and summary["best"]["trial"] == 2
    assert "storage" in summary and summary["storage"].startswith("journal:///")


def test_optuna_history_importances_and_saving_on_cpu(optuna_report):
    _, _, md, page = optuna_report
    study = optuna.load_study(study_name="lr_optuna", storage=_open(optuna_report[0]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    expected = optuna.importance.get_param_importances(study, evaluator=evaluator)
    assert set(expected) == {"optim.lr", "optim.beta2"} and sum(expected.values()) == pytest.approx(1.0)
    for param, value in expected.items():
        assert f"| {param} | {value:.4g} |" in md
    assert "![Optuna optimisation history](optuna_history.png)" in md
    assert "![Optuna parameter importances](optuna_importances.png)" in md
    assert 'alt="Optuna optimisation history"' in page and 'alt="Optuna parameter importances"' in page
    # CPU runs: device-hours, never GPU-hours
    assert "Pruning saved about 0.08 device-hours" in md and "CPU runs: no GPU time" in md
    optuna_part = md.split("## Optuna study")[1]
    assert "GPU-h" not in optuna_part and SAVED_COL in optuna_part


def _open(sd: Path):
    from neuromf.sweep.storage import find_storage, open_storage

    return open_storage(find_storage(sd))


def test_optuna_saving_on_gpu_says_gpu_hours(tmp_path):
    sd = optuna_sweep(tmp_path / "gpu", accelerator="gpu")
    build_report([sd], real=False)
    md = (sd / "report" / "report.md").read_text()
    assert "Pruning saved about 0.08 GPU-hours (devices x wall time per step x steps not run)." in md


# -------------------------------------------------------------------------------------------- cost
def _timed(run: Path, start: float, seconds: float, trainer: dict, sps: list[float], peak: list[float] | None):
    """Started at ``start`` (provenance), status.json written ``seconds`` later; metrics with samples/s."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start))
    _status(run, provenance={"git_commit": COMMIT, "git_dirty": True, "started": stamp})
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) | {"trainer": trainer}
    _config(run, cfg)
    cols = ["step", "epoch", "val/swd", "train/samples_per_s", *(["train/peak_mem_gb"] if peak else [])]
    lines = [",".join(cols)]
    for i, s in enumerate(sps):
        lines.append(",".join([str(i), "0", "0.1", str(s), *([str(peak[i])] if peak else [])]))
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    os.utime(run / "status.json", (start + seconds, start + seconds))


def test_cost_per_arm(tmp_path):
    import torch

    sd, t0 = tmp_path / "s", time.time() - 10_000
    make_run(sd / "0", "u", 0, 0.1)
    make_run(sd / "1", "x", 0, 0.2)
    cpu = {"accelerator": "cpu", "devices": 2, "num_nodes": 1}
    _timed(sd / "0", t0, 1800, cpu, [10.0, 20.0, 30.0], None)  # 0.5 h x 2 CPU processes = 1 device-hour
    gpu = {"accelerator": "gpu", "devices": [0, 1, 2, 3], "num_nodes": 2}
    _timed(sd / "1", t0, 900, gpu, [100.0, 300.0], [3.0, 5.5])  # 0.25 h x 4 GPUs x 2 nodes = 2 GPU-hours
    (sd / "1" / "checkpoints").mkdir()
    torch.save({"state_dict": {"net.w": torch.zeros(3, 4), "net.b": torch.zeros(5), "ema.w": torch.zeros(9)}},
               sd / "1" / "checkpoints" / "last.ckpt")  # fmt: skip
    records = load_sweep(sd)
    cost = cost_table(records, ["u", "x"]).set_index("arm")
    assert cost.loc["u", "wall time per run (min)"] == pytest.approx(30.0, abs=0.05)
    assert cost.loc["u", "device-hours"] == pytest.approx(1.0, abs=0.01) and np.isnan(cost.loc["u", "GPU-hours"])
    assert cost.loc["x", "device-hours"] == pytest.approx(2.0, abs=0.01)
    assert cost.loc["x", "GPU-hours"] == pytest.approx(2.0, abs=0.01)
    assert cost.loc["u", "samples/s (median)"] == 20.0 and cost.loc["x", "samples/s (median)"] == 200.0
    assert cost.loc["x", "parameters"] == 17 and cost.loc["u", "parameters"] == ""  # net.* only; no checkpoint
    assert cost.loc["x", "peak GPU memory (GiB)"] == 5.5 and np.isnan(cost.loc["u", "peak GPU memory (GiB)"])


# -------------------------------------------------------------------------------------- provenance
def test_provenance_table_and_lines(tmp_path):
    sd = tmp_path / "s"
    make_run(sd / "0", "u", 0, 0.1)
    make_run(sd / "1", "x", 0, 0.2)
    _status(sd / "0", wandb_run_id="abc123", provenance={"git_commit": COMMIT, "git_dirty": True,
                                                          "started": "2026-01-02T03:04:05+0000"})  # fmt: skip
    (sd / "0" / "wandb" / "offline-run-20260102_030405-abc123").mkdir(parents=True)
    (sd / "1" / "wandb_id.txt").write_text("def456\n")  # the id file of a run whose status.json lacks it
    _status(sd / "1", provenance={"git_commit": "f" * 40, "git_dirty": False, "started": "2026-01-03T00:00:00"})
    overrides = {"hydra": ["hydra/launcher=local"], "task": ["sweep=demo", "trainer.max_epochs=2"]}
    (sd / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": overrides}}))
    table = provenance_table(load_sweep(sd), ["u", "x"]).set_index("arm")
    assert table.loc["u", "W&B run id"] == "abc123"
    assert table.loc["u", "W&B dir"] == str(sd / "0" / "wandb" / "offline-run-20260102_030405-abc123")
    assert table.loc["u", "git commit"] == "0123456789ab (dirty)" and table.loc["x", "git commit"] == "f" * 12
    assert table.loc["u", "started"] == "2026-01-02T03:04:05+0000" and table.loc["x", "W&B run id"] == "def456"
    assert table.loc["x", "path"] == str(sd / "1")

    build_report([sd], real=False)
    md = (sd / "report" / "report.md").read_text()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert f"at git commit {head.stdout.strip()}" in md
    assert time.strftime("Report written %Y-%m-%d") in md and "by `python -m neuromf.report" in md
    assert f"Sweep {sd}: command: python -m neuromf.train -m hydra/launcher=local sweep=demo trainer.max_epochs=2" in md
    assert "⚠ the runs were trained at 2 different git commits." in md


# --------------------------------------------------------------------- reference levels, confound, gallery
def _arms_with_refs_and_samples(sd: Path, confound: bool, collapsed: float | None = None) -> None:
    """Arms u / x (seeds 0, 1) differing in prediction_type; with ``confound`` also in the v-head and
    data_proportion. Reference levels of swd: real 0.05, noise 1.0 (and ``collapsed``); samples at 1, 2 and 10
    steps."""
    levels = {"real": 0.05, "noise": 1.0} | ({"collapsed": collapsed} if collapsed is not None else {})
    job = 0
    for pred, base in (("u", 0.1), ("x", 0.6)):
        for seed in (0, 1):
            run = sd / str(job)
            make_run(run, pred, seed, base + 0.01 * seed)
            v_head, prop = (pred == "u", 0.5 if pred == "u" else 0.75) if confound else (True, 0.5)
            _config(run, {"seed": seed, "objective": "val/swd", "objective_mode": "min",
                          "model": {"prediction_type": pred, "use_v_head": v_head},
                          "loss": {"time_sampler": {"data_proportion": prop}}})  # fmt: skip
            summary = {"reference": {"swd": levels}, "history": [{"epoch": 4, "step": 120}]}
            (run / "eval").mkdir()
            (run / "eval" / "summary.json").write_text(json.dumps(summary))
            for nfe in (1, 2, 10):
                _png(run / "samples" / "epoch_0004" / f"nfe_{nfe}" / "sample_00.png", nfe / 10)
            job += 1
    _png(sd / "0" / "real" / "val_00.png", 0.5)


def test_reference_levels_confound_and_gallery(tmp_path):
    sd = tmp_path / "s"
    _arms_with_refs_and_samples(sd, confound=True, collapsed=0.3)
    res = build_report([sd], real=True)
    md = (sd / "report" / "report.md").read_text()
    page = (sd / "report" / "report.html").read_text()
    # reference levels: in the intro and as columns of the evaluation table
    assert "Reference levels of the objective's metric: real floor 0.05, collapsed 0.3, noise ceiling 1" in md
    row = next(r for r in md.splitlines() if r.startswith("| best val/swd (↓)"))
    assert row.endswith("| 0.05 | 0.3 | 1 |")  # the last columns: real floor, collapsed, noise ceiling
    # x (mean 0.605) is worse than the collapsed level 0.3: flagged although it closes 42% of the gap; u (0.105) not
    assert "⚠ arm model.prediction_type=x: the objective (0.605) is no better than a collapsed sampler's (0.3" in md
    assert "closes 42% of the noise -> real gap" in md and "arm model.prediction_type=u: the objective" not in md
    # confound: the label varies one key, three resolved keys differ; composing the labels sets only that key
    assert list(res["config_diff"].index) == ["loss.time_sampler.data_proportion", "model.prediction_type",
                                              "model.use_v_head"]  # fmt: skip
    assert (
        "⚠ the arm label varies model.prediction_type but 2 resolved keys differ between the arms that it does not "
        "set: loss.time_sampler.data_proportion, model.use_v_head. Each may explain a difference (a confound). "
        "The arm label model.prediction_type resolves to: model.prediction_type." in md
    )
    # gallery: per arm the smallest and the largest step count (1, 10; not 2), captioned, and the real volume
    for arm in ("model.prediction_type=u", "model.prediction_type=x"):
        assert f"*{arm} | 1 step | training step 120 | seed 0 | sample_00*" in md
        assert f"*{arm} | 10 steps | training step 120 | seed 0 | sample_00*" in md
    assert "| 2 steps |" not in md and "*real validation volume 0*" in md
    assert page.count("<figcaption>model.prediction_type=") == 4 and 'alt="real validation volume 0"' in page


def test_no_confound_when_the_label_is_the_only_difference(tmp_path):
    sd = tmp_path / "s"
    _arms_with_refs_and_samples(sd, confound=False)
    build_report([sd], real=True)
    md = (sd / "report" / "report.md").read_text()
    # without a collapsed level: x (mean 0.605) closes (1 - 0.605) / (1 - 0.05) = 42% of the gap: flagged; u not
    assert "⚠ arm model.prediction_type=x: the objective closes only 42% of the gap" in md
    assert "arm model.prediction_type=u: the objective closes" not in md
    assert "a confound" not in md and "resolved keys differ" not in md
    assert "The arm label model.prediction_type resolves to: model.prediction_type." in md
    assert "Real validation volumes not shown" not in md  # the run's saved real/ PNGs are used as they are


def test_report_dir_is_group_readable(tmp_path):
    """The report dir is published 0755 / its files 0644 (tempfile.mkdtemp creates it 0700)."""
    import stat

    sd = tmp_path / "sweep"
    for job, (pred, seed, best) in enumerate([("u", 0, 0.1), ("x", 0, 0.2)]):
        make_run(sd / str(job), pred, seed, best)
    out = build_report([sd], real=False)["out"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in out.rglob("*") if p.is_dir())


def test_sections_are_a_registry():
    """Each section is one module with blocks(ctx); the page order is the SECTIONS list."""
    from neuromf.report.sections import SECTIONS

    names = [n for n, _ in SECTIONS]
    assert len(names) == len(set(names)) and all(callable(m.blocks) for _, m in SECTIONS)


def _group_arms(sd: Path, labels: list[str], budget: bool, steps: list[int], extra: dict | None = None) -> None:
    """One run per ``loss=<name>`` label with its config composed by Hydra (as neuromf.train writes it), then the
    step count a budget gives it (``steps``) and, for the first arm, the ``extra`` {section: {key: value}}."""
    from neuromf.config_compose import compose

    for job, (name, n) in enumerate(zip(labels, steps, strict=True)):
        run = sd / str(job)
        make_run(run, "x", 0, 0.5 + 0.1 * job)
        overrides = [f"loss={name}", "seed=0"]
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        cfg = {k: v for k, v in compose(overrides).items() if k != "_sweep_params"}
        cfg["budget"]["fm_steps"] = 300 if budget else None
        cfg["trainer"] |= {"max_steps": n, "val_check_interval": n}
        for section, values in (extra or {}).items() if job == 0 else ():
            cfg[section] |= values
        _config(run, cfg)
        _status(run, overrides=overrides)


def test_group_keys_and_budget_steps_are_not_confounds(tmp_path):
    """loss=fm vs loss=imf at equal compute: the loss keys and model.use_v_head (set by conf/loss/fm.yaml outside
    the loss package) come from the label, trainer.max_steps / val_check_interval from the budget: no warning."""
    sd = tmp_path / "s"
    _group_arms(sd, ["fm", "imf"], budget=True, steps=[300, 180])
    build_report([sd], real=False)
    md = (sd / "report" / "report.md").read_text()
    line = next(x for x in md.splitlines() if "The arm label loss resolves to:" in x)
    assert "model.use_v_head" in line and "loss._target_" in line and "a confound" not in md
    assert line.endswith(
        "Set by the equal-compute budget (each arm's step count for the same training FLOPs, in its budget.json): "
        "trainer.max_steps, trainer.val_check_interval."
    )


def test_step_counts_without_a_budget_and_edited_keys_are_confounds(tmp_path):
    """Without a budget a different trainer.max_steps is not explained; nor is an optimiser key the label does not
    set (a hand-edited config)."""
    sd = tmp_path / "s"
    _group_arms(sd, ["fm", "imf"], budget=False, steps=[300, 180], extra={"optim": {"lr": 1.0}})
    build_report([sd], real=False)
    md = (sd / "report" / "report.md").read_text()
    assert (
        "⚠ the arm label varies loss but 3 resolved keys differ between the arms that it does not set: optim.lr, "
        "trainer.max_steps, trainer.val_check_interval. Each may explain a difference (a confound)." in md
    )
    assert "equal-compute budget" not in md


def test_labels_that_no_longer_compose_leave_every_difference_open(tmp_path):
    """A run whose label names a loss the conf/ no longer has: the cause of no key is known, each is listed."""
    sd = tmp_path / "s"
    _group_arms(sd, ["fm", "imf"], budget=False, steps=[300, 300])
    (sd / "1" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["loss=retired", "seed=0"]))
    build_report([sd], real=False)
    md = (sd / "report" / "report.md").read_text()
    line = next(x for x in md.splitlines() if "the arm label varies loss but" in x)
    assert "resolved keys differ between the arms: " in line and "model.use_v_head" in line
    assert "that it does not set" not in line
