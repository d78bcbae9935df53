"""The report's answer at a glance on hand-made runs with known answers: the verdict (best arm, differences,
intervals, Holm p, resolved or not, seeds that would resolve it), quality against steps (the 1-step gap) and
quality against cost."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from neuromf.report import build_report
from neuromf.report.core import ema
from neuromf.report.quality import NO_SPREAD, seeds_to_resolve

OBJ = "val/feat3d_fd/nfe1"
# arm -> seed -> {nfe: best val/feat3d_fd/nfe<N>}
FD = {
    "a": {0: {1: 1.59, 2: 1.40, 4: 1.20}, 1: {1: 1.61, 2: 1.42, 4: 1.22}, 2: {1: 1.63, 2: 1.44, 4: 1.24}},
    "b": {0: {1: 1.75, 2: 1.50, 4: 1.30}, 1: {1: 1.78, 2: 1.52, 4: 1.33}, 2: {1: 1.81, 2: 1.54, 4: 1.36}},
    "c": {0: {1: 1.60, 2: 1.45, 4: 1.10}, 1: {1: 1.66, 2: 1.46, 4: 1.13}, 2: {1: 1.62, 2: 1.47, 4: 1.14}},
}
HOURS = {"a": 1.0, "b": 0.5, "c": 2.0}  # wall time per run; devices: 2 (c), 1 (a, b)
DEVICES = {"a": 1, "b": 1, "c": 2}
REFS = {"real": 0.5, "collapsed": 9.0, "noise": 23.0}


def A(x: str) -> str:
    """The arm label of arm x."""
    return f"model.prediction_type={x}"


def make_step_run(
    run_dir, arm: str, seed: int, fd: dict[int, float], hours: float = 1.0, devices: int = 1, target: str = "",
    eval_seed: int = 0, refs: dict = REFS,
):  # fmt: skip
    """A completed run evaluated at 1, 2 and 4 steps (val/feat3d_fd/nfeN, val/recall/nfeN), with the reference
    levels, its W&B runtime and its devices."""
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [f"model.prediction_type={arm}", f"seed={seed}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nobjective: {OBJ}\nobjective_mode: min\nmodel:\n  prediction_type: {arm}\n"
        f"trainer:\n  accelerator: gpu\n  devices: {devices}\neval:\n  seed: {eval_seed}\n"
        + (f"loss:\n  _target_: {target}\n" if target else "")
    )
    nfes = sorted(fd)
    cols = ["step", "epoch", "train/loss_u"]
    cols += [f"val/feat3d_fd/nfe{n}" for n in nfes] + [f"val/recall/nfe{n}" for n in nfes]
    cols += [f"ref/feat3d_fd/{k}" for k in refs]
    lines = [",".join(cols)]
    rng = np.random.default_rng(seed)
    for step in range(0, 40):
        lines.append(f"{step},0,{2.0 / (1 + step) + 0.05 * rng.random()}" + "," * (len(cols) - 3))
        if step in (19, 39):
            worse = 0.3 if step == 19 else 0.0  # the last validation is the best
            vals = [fd[n] + worse for n in nfes] + [0.5 + 0.05 * n for n in nfes] + list(refs.values())
            lines.append(f"{step},0,," + ",".join(str(v) for v in vals))
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    status = {"status": "completed", "objective_key": OBJ, "objective": fd[nfes[0]], "global_step": 39}
    (run_dir / "status.json").write_text(json.dumps({**status, "overrides": overrides}))
    summ = run_dir / "wandb" / "offline-run-1" / "files" / "wandb-summary.json"
    summ.parent.mkdir(parents=True)
    summ.write_text(json.dumps({"_runtime": hours * 3600}))


def make_step_sweep(sd, arms=FD):
    job = 0
    for arm, seeds in arms.items():
        for seed, fd in seeds.items():
            make_step_run(sd / str(job), arm, seed, fd, HOURS.get(arm, 1.0), DEVICES.get(arm, 1))
            job += 1
    return sd


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sd = make_step_sweep(tmp_path_factory.mktemp("verdict") / "sweep")
    res = build_report([sd], real=False)
    return res, json.loads((res["out"] / "summary.json").read_text())


def _seeds_by_hand(diffs) -> int:
    d = np.asarray(diffs, float)
    sd = d.std(ddof=1)
    return next(n for n in range(2, 10_000) if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(d.mean()))


def test_seeds_to_resolve_known_answers():
    a = {0: 1.59, 1: 1.61, 2: 1.63}
    # b - a = 0.16, 0.17, 0.18: sd 0.01; n = 2: 12.706 * 0.01 / sqrt(2) = 0.0898 < 0.17 -> 2 seeds
    assert seeds_to_resolve({0: 1.75, 1: 1.78, 2: 1.81}, a) == 2
    # c - a = 0.01, 0.05, -0.01: mean 0.01667, sd 0.03055: t_{.975,n-1} 0.03055 / sqrt(n) < 0.01667 first at n = 16
    assert seeds_to_resolve({0: 1.60, 1: 1.66, 2: 1.62}, a) == _seeds_by_hand([0.01, 0.05, -0.01]) == 16
    assert seeds_to_resolve({0: 1.7}, a) is None  # n = 1: no spread
    assert seeds_to_resolve({0: 1.7, 1: 1.7}, {0: 1.6, 1: 1.6}) == 2  # a constant difference


def test_verdict_at_one_and_the_largest_step_count(report):
    res, summary = report
    v = summary["verdict"]
    assert [s["nfe"] for s in v["steps"]] == [1, 4]
    one, four = v["steps"]
    assert one["best"] == A("a") and four["best"] == A("c")  # c is the best at 4 steps, a at 1 step
    rows = {r["arm"][-1]: r for r in one["rows"]}
    # b vs a at 1 step: seed-paired differences 0.16, 0.17, 0.18
    t = stats.ttest_rel([1.75, 1.78, 1.81], [1.59, 1.61, 1.63])
    ci = t.confidence_interval(0.95)
    assert rows["b"]["diff"] == pytest.approx(0.17) and rows["b"]["ci"] == pytest.approx([ci.low, ci.high])
    p_c = stats.ttest_rel([1.60, 1.66, 1.62], [1.59, 1.61, 1.63]).pvalue
    assert rows["b"]["p_holm"] == pytest.approx(min(1, 2 * min(t.pvalue, p_c)))  # Holm over the two arms
    assert rows["c"]["p_holm"] == pytest.approx(max(rows["b"]["p_holm"], p_c))
    assert rows["b"]["resolved"] and not rows["c"]["resolved"]
    assert rows["b"]["seeds"] == 2 and rows["c"]["seeds"] == 16
    text = v["text"]
    assert text.startswith("Verdict") and f"At 1 step, the best arm is {A('a')} (1.61" in text
    assert f"{A('c')}: +0.01667 [" in text and "not resolved at n = 3 (16 seeds per arm would resolve it)" in text
    assert f"At 4 steps, the best arm is {A('c')}" in text
    page = (res["out"] / "report.html").read_text()
    assert page.index('id="verdict-box"') < page.index("Arms (ranked)")  # the page opens with it
    assert (res["out"] / "verdict.png").is_file()


def test_verdict_with_one_seed_cannot_tell(tmp_path):
    sd = make_step_sweep(tmp_path / "sweep", {a: {0: s[0]} for a, s in FD.items()})
    summary = json.loads((build_report([sd], real=False)["out"] / "summary.json").read_text())
    assert summary["verdict"]["text"].count(NO_SPREAD) == 4  # two arms x two step counts


def test_ema_is_wandb_smoothing():
    import pandas as pd

    s = ema(pd.Series([1.0, 0.0, 1.0]), 0.5)
    # debiased: 1; (0.25 + 0)/0.75 ... by hand: last = .5, .25, .625; / (1 - .5^t) = 1, 1/3, 5/7
    assert list(s) == pytest.approx([1.0, 1 / 3, 5 / 7])


def test_quality_against_steps_and_the_one_step_gap(report):
    res, _ = report
    out = res["out"]
    assert (out / "quality_vs_steps.png").is_file()
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "Quality against sampling steps" in page and "quality_vs_steps.png" in md
    # the 1-step gap: mean at 1 step over mean at 4 steps; a: 1.61 / 1.22, b: 1.78 / 1.33, c: 1.62667 / 1.12333
    head = md[md.index("## Arms (ranked)") :].splitlines()[2]
    assert "1-step gap (nfe1 / nfe4)" in head
    for arm, gap in (("a", 1.61 / 1.22), ("b", 1.78 / 1.33), ("c", (4.88 / 3) / (3.37 / 3))):
        row = next(ln for ln in md.splitlines() if ln.startswith("| ") and f"| {A(arm)} | done |" in ln)
        assert f"| {gap:.4g} |" in row


def test_the_steps_section_says_whether_the_evaluation_noise_was_shared(report, tmp_path):
    md = (report[0]["out"] / "report.md").read_text()
    assert "same fixed evaluation noise (eval.seed=0)" in md
    sd = tmp_path / "other_noise"
    make_step_run(sd / "0", "a", 0, FD["a"][0])
    make_step_run(sd / "1", "b", 0, FD["b"][0], eval_seed=1)
    build_report([sd])
    md = (sd / "report" / "report.md").read_text()
    assert "⚠ the runs drew their evaluation noise from different eval.seed values ([0, 1])" in md


def test_quality_against_cost(report):
    import pandas as pd

    res, _ = report
    out = res["out"]
    assert (out / "quality_vs_cost.png").is_file()
    pts = pd.read_csv(out / "cost_points.csv")
    hours = pts.groupby("arm")["device-hours"].mean()
    # W&B runtime x devices: a 1 h x 1, b 0.5 h x 1, c 2 h x 2
    assert hours[A("a")] == pytest.approx(1.0) and hours[A("b")] == pytest.approx(0.5)
    assert hours[A("c")] == pytest.approx(4.0)
    md = (out / "report.md").read_text()
    assert "## Quality against training cost" in md and "differs up to 8x" in md


def test_cost_falls_back_to_counted_flops(tmp_path):
    import shutil

    sd = make_step_sweep(tmp_path / "sweep", {a: FD[a] for a in ("a", "b")})
    for i, run in enumerate(sorted(p for p in sd.iterdir() if p.is_dir())):
        shutil.rmtree(run / "wandb")
        (run / ".hydra" / "config.yaml").unlink()  # no wall time known: no W&B runtime, no start
        (run / "budget.json").write_text(json.dumps({"budget_flops": 1e15 * (1 + i // 3)}))
    md = (build_report([sd], real=False, metric=OBJ, mode="min")["out"] / "report.md").read_text()
    assert "against its training FLOPs" in md


def test_metric_table_by_step_count_and_compact_runs(report):
    res, _ = report
    md = (res["out"] / "report.md").read_text()
    metrics = md[md.index("## Evaluation metrics") : md.index("## Runs")]
    for nfe in (1, 2, 4):
        block = metrics[metrics.index(f"### {nfe} sampling step") :].split("###")[1]
        rows = [ln.split(" | ")[0] for ln in block.splitlines() if ln.startswith("| ") and "metric" not in ln]
        assert rows == ["| feat3d_fd (↓)", "| recall (↑)"]  # one row per metric
    assert "| feat3d_fd (↓) | 1.61 ± 0.02 | 1.627 ± 0.03055 | 1.78 ± 0.03 | 0.5 | 9 | 23 |" in metrics
    runs = md[md.index("## Runs") :].split("\n## ")[0]
    assert runs.splitlines()[2] == "| arm | seed | status | used | objective | notes |"
    assert "(runs.csv)" in runs and 'href="runs.csv"' in (res["out"] / "report.html").read_text()


def test_axes_zoom_on_the_arms_with_reference_levels_named_at_the_edge(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuromf.report.core import draw_refs

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1.59, 1.75])
    lo, hi = ax.get_ylim()
    draw_refs(ax, {"real": 1.6, "noise": 23.0, "collapsed": 0.5})
    assert ax.get_ylim() == (lo, hi)  # not stretched to the noise ceiling
    assert [ln.get_label() for ln in ax.get_lines()[1:]] == ["real floor (1.6)"]  # inside: a line
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["↑ noise ceiling (23)", "↓ collapsed (0.5)"]  # outside: named at the edge
    plt.close(fig)


def test_flow_matching_arm_is_the_multi_step_level(tmp_path):
    sd = tmp_path / "sweep"
    for job, (arm, seed) in enumerate([("a", 0), ("a", 1), ("fm", 0), ("fm", 1)]):
        fd = FD["a"][seed] if arm == "a" else {1: 3.0 + seed, 2: 1.5, 4: 1.0 + 0.1 * seed}
        make_step_run(sd / str(job), arm, seed, fd, target="neuromf.meanflow.FlowMatchingObjective" * (arm == "fm"))
    md = (build_report([sd], real=False)["out"] / "report.md").read_text()
    assert f"Multi-step reference: the flow-matching arm {A('fm')} at 4 steps, 1.05 (dashed)" in md


@pytest.mark.parametrize(
    "collapsed, fm_4, expected",
    [
        (1.5, {0: 1.4, 1: 1.6, 2: 1.5}, "The budget is the limit: even the flow-matching arm"),  # fm spans 1.5
        (1.5, {0: 1.0, 1: 1.1, 2: 1.05}, "The objective is the limit: the flow-matching arm"),  # only fm clears
        (2.0, {0: 1.0, 1: 1.1, 2: 1.05}, "One-step sampling learns more than the mean volume"),  # a clears 2.0
    ],
)
def test_the_verdict_says_whether_the_objective_or_the_budget_is_the_limit(tmp_path, collapsed, fm_4, expected):
    sd = tmp_path / "sweep"
    refs = {"real": 0.5, "collapsed": collapsed, "noise": 23.0}
    runs = [("a", s, FD["a"][s]) for s in (0, 1, 2)] + [("fm", s, {1: 3.0, 2: 2.0, 4: fm_4[s]}) for s in (0, 1, 2)]
    for job, (arm, seed, fd) in enumerate(runs):
        target = "neuromf.meanflow.FlowMatchingObjective" * (arm == "fm")
        make_step_run(sd / str(job), arm, seed, fd, target=target, refs=refs)
    out = build_report([sd], real=False)["out"]
    text = json.loads((out / "summary.json").read_text())["verdict"]["limit"]
    # a at 1 step: 1.59, 1.61, 1.63 -> mean 1.61, t-interval 1.61 -+ t(0.975, 2) 0.02 / sqrt(3) = [1.560, 1.660]
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert text.startswith(f"At 1 step the best arm is {A('a')}, 1.61 [{1.61 - half:.4g}, {1.61 + half:.4g}; 95% t-")
    assert f"against the collapsed level {collapsed:.4g}" in text and expected in text
    assert text in (out / "report.md").read_text()


def test_reference_lines_named_on_narrow_panels_once_per_value():
    """label_inside: each level inside the zoomed axis is named at its line; levels at one value share one label
    (recall's collapsed and noise levels are both 0), whatever level lies between them in drawing order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuromf.report.core import draw_refs

    fig, ax = plt.subplots()
    ax.plot([1, 2, 4], [0.0, 0.3, 0.6])
    draw_refs(ax, {"real": 0.0, "collapsed": 0.5, "noise": 0.0}, label_inside=True)
    assert sorted(t.get_text() for t in ax.texts) == ["collapsed (0.5)", "real floor = noise ceiling (0)"]
    assert ax.get_legend_handles_labels()[1] == []  # named on the plot, not through a legend
    plt.close(fig)
