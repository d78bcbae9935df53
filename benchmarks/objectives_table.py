"""The per-objective table of a `sweep=objectives` sweep dir (README, One-step objectives).

    python benchmarks/objectives_table.py SWEEP_DIR [SWEEP_DIR ...] [--two-mode] [--curve] [--out table.md]

For every `loss=` arm (runs pooled over their seeds; with several sweep dirs, an override that not every run shares
is part of the arm's name, e.g. `fm loss.time_sampler.distribution=uniform`): the steps its equal-compute budget
bought and its counted step cost against flow matching (budget.json), the final validation's 1-step objective
(val/feat3d_fd/nfe1) as the mean over seeds with a t-interval and each seed's own evaluation interval (bootstrap
over samples), against the data's reference levels (real floor, collapsed: one volume repeated), the multi-step
values, and 1-step recall / coverage. With --two-mode (a sweep on benchmarks/mode_balance.py's two-mode store,
`--write-store`): the 1- and 4-step minority share of 64 samples from fixed noise, drawn here from each run's final
EMA weights (checkpoints/last.ckpt) with the objective's sampler and assigned to the nearer template, as
mode_balance.py does. A RUN_DIR (a single run, e.g. `experiment=demo_long`) stands for a sweep of one run. With
--curve, a second table: per run, its budget and the 1-step objective with its evaluation interval at every
validation (eval/summary.json's history), each marked where the interval lies wholly below the collapsed level.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neuromf.report.core import t_interval  # noqa: E402
from neuromf.run_dir import RunDir  # noqa: E402

KEY = "val/feat3d_fd"


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The runs of a sweep dir (its numbered job dirs), or the dir itself when it is one run."""
    if RunDir(sweep_dir).overrides.is_file():
        return [sweep_dir]
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def overrides(run: Path) -> dict[str, str]:
    lines = yaml.safe_load(RunDir(run).overrides.read_text()) or []
    return dict(line.split("=", 1) for line in lines if "=" in line)


def minority_shares(run: Path, nfe_list=(1, 4), n: int = 64, seed: int = 1234) -> dict[str, float]:
    """Minority share of n samples from fixed noise at each nfe, from the run's final EMA weights."""
    from mode_balance import SIZE, assign, templates

    from neuromf.meanflow import noise_like, sample
    from neuromf.meanflow.registry import sampler_of
    from neuromf.tracking.checkpoint_network import load_network

    net, hparams = load_network(RunDir(run).last_checkpoint, use_ema=True)
    kind = sampler_of(hparams.get("loss"))
    eps = noise_like((n, 1, SIZE, SIZE, SIZE), seed)
    out = {}
    for nfe in nfe_list:
        mode, _ = assign(sample(net, eps, nfe, sampler=kind), templates())
        out[f"share{nfe}"] = float(mode.float().mean())
    return out


def read_run(run: Path, two_mode: bool) -> dict | None:
    rd = RunDir(run)
    if not rd.eval_summary.is_file() or not rd.budget.is_file():
        return None
    summary = json.loads(rd.eval_summary.read_text())
    budget = json.loads(rd.budget.read_text())
    last, ref = summary.get("last") or {}, summary.get("reference") or {}
    ov = overrides(run)
    row = {
        "overrides": ov,
        "loss": ov.get("loss", "imf"),
        "seed": int(ov.get("seed", 0)),
        "steps": budget["steps"],
        # mean FLOPs of a step against an FM step over the run (phases of a schedule cost differently)
        "cost": budget["budget_flops"] / budget["fm_step_flops"] / budget["budget_steps"],
        "phases": budget.get("step_cost_vs_fm", {}),
        "ref_real": (ref.get("feat3d_fd") or {}).get("real"),
        "ref_collapsed": (ref.get("feat3d_fd") or {}).get("collapsed"),
    }
    for nfe in (1, 2, 4, 10, 50):
        row[f"fd{nfe}"] = last.get(f"{KEY}/nfe{nfe}")
    row["lo1"], row["hi1"] = last.get(f"{KEY}/nfe1_ci_lo"), last.get(f"{KEY}/nfe1_ci_hi")
    row["budget_fm_steps"] = budget.get("budget_fm_steps")
    row["history"] = [
        (h["step"], h[f"{KEY}/nfe1"], h.get(f"{KEY}/nfe1_ci_lo"), h.get(f"{KEY}/nfe1_ci_hi"))
        for h in summary.get("history") or []
        if h.get(f"{KEY}/nfe1") is not None
    ]
    for m in ("recall", "coverage"):
        row[f"{m}1"] = last.get(f"val/{m}/nfe1")
    if two_mode:
        row.update(minority_shares(run))
    return row


def name_arms(rows: list[dict]) -> None:
    """Each row's arm: its loss, and the overrides (other than loss and seed) that not every run shares."""
    items = [set(r["overrides"].items()) for r in rows]
    common = set.intersection(*items) if items else set()
    for r, its in zip(rows, items, strict=True):
        extra = sorted(f"{k}={v}" for k, v in its - common if k not in ("loss", "seed"))
        r["loss"] = " ".join([r["loss"], *extra])


def fmt_mean(values, digits: int = 3) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = float(np.mean(vals))
    if len(vals) < 2:
        return f"{mean:.{digits}f}"
    lo, hi = t_interval(vals)
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table(rows: list[dict], two_mode: bool) -> str:
    by_loss: dict[str, list[dict]] = {}
    for r in rows:
        by_loss.setdefault(r["loss"], []).append(r)
    order = sorted(by_loss, key=lambda k: np.mean([r["fd1"] for r in by_loss[k]]))
    real = np.nanmean([r["ref_real"] for r in rows if r["ref_real"] is not None])
    collapsed = np.nanmean([r["ref_collapsed"] for r in rows if r["ref_collapsed"] is not None])
    multi = [n for n in (2, 4, 10, 50) if any(r[f"fd{n}"] is not None for r in rows)]  # the evaluated step counts
    head = ["loss=", "n", "steps", "mean step cost / FM", "1-step FD, mean [t 95 %]", "seeds' eval 95 % CI",
            "below collapsed", *(f"{n}-step FD" for n in multi), "1-step recall", "1-step coverage"]  # fmt: skip
    if two_mode:
        head += ["1-step minority share", "4-step minority share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss in order:
        rs = sorted(by_loss[loss], key=lambda r: r["seed"])
        cis = "; ".join(f"{r['fd1']:.2f} [{r['lo1']:.2f}, {r['hi1']:.2f}]" for r in rs if r["lo1"] is not None)
        below = sum(1 for r in rs if r["hi1"] is not None and r["hi1"] < r["ref_collapsed"])
        cols = [
            loss,
            str(len(rs)),
            "/".join(sorted({str(r["steps"]) for r in rs})),
            f"{np.mean([r['cost'] for r in rs]):.2f}",
            fmt_mean([r["fd1"] for r in rs]),
            cis,
            f"{below} of {len(rs)} seeds",
            *(fmt_mean([r[f"fd{n}"] for r in rs]) for n in multi),
            fmt_mean([r["recall1"] for r in rs], 2),
            fmt_mean([r["coverage1"] for r in rs], 2),
        ]
        if two_mode:
            cols += [fmt_mean([r["share1"] for r in rs], 2), fmt_mean([r["share4"] for r in rs], 2)]
        lines.append("| " + " | ".join(cols) + " |")
    lines.append("")
    lines.append(
        f"Reference levels of val/feat3d_fd (this data): real floor {real:.3f}, collapsed {collapsed:.3f}. "
        "'below collapsed': seeds whose 1-step evaluation interval lies wholly below the collapsed level."
    )
    if two_mode:
        lines.append("Minority share of the data: 0.375 (mode_balance.py).")
    return "\n".join(lines)


def curve(rows: list[dict]) -> str:
    """Per run: budget, steps and the 1-step objective [evaluation interval] at each validation; '*' marks an
    interval wholly below the collapsed level."""
    lines = ["| loss= | seed | budget (FM steps) | steps | 1-step FD at each validation: step value [eval 95 % CI] |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["loss"], r["budget_fm_steps"] or 0, r["seed"])):
        cells = [
            f"{step}: {v:.3f}"
            + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
            + ("*" if hi is not None and hi < r["ref_collapsed"] else "")
            for step, v, lo, hi in r["history"]
        ]
        budget = "n/a" if r["budget_fm_steps"] is None else f"{r['budget_fm_steps']:g}"
        lines.append(f"| {r['loss']} | {r['seed']} | {budget} | {r['steps']} | {'; '.join(cells) or 'n/a'} |")
    lines.append("")
    lines.append("'*': the evaluation interval lies wholly below the collapsed level.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dirs", type=Path, nargs="+")
    p.add_argument("--two-mode", action="store_true", help="also the minority shares (two-mode store sweeps)")
    p.add_argument("--curve", action="store_true", help="also each run's 1-step objective at every validation")
    p.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    p.add_argument("--json", type=Path, default=None, help="also write the per-run rows here")
    a = p.parse_args(argv)
    for sd in a.sweep_dirs:
        if not sd.is_dir():
            print(f"error: {sd}: not a sweep dir or a run dir", file=sys.stderr)
            return 2
    rows = [r for sd in a.sweep_dirs for run in run_dirs(sd) if (r := read_run(run, a.two_mode)) is not None]
    if not rows:
        print(f"error: {' '.join(map(str, a.sweep_dirs))}: no finished run (eval/summary.json and budget.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    name_arms(rows)
    text = table(rows, a.two_mode) + ("\n\n" + curve(rows) if a.curve else "")
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
