"""Wall time of a pruned Optuna study against the same study unpruned.

    scripts/slurm-local.sh start
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_vs_full.py                   # local one-node SLURM
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_vs_full.py --launcher local  # no SLURM: local launcher

The study is tests/test_sweep_pruning.py::test_hopeless_trials_are_pruned_and_baselines_run_first's: `sweep=lr_optuna`
with 4 trials, 2 per batch, on the tiny training config of the SLURM tests (conftest.TINY_TRAIN; 3 epochs of 2
steps, a validation per epoch); the two enqueued baselines (lr 1e-3, beta2 0.99 / 0.999) run first, the two sampled
trials have the hopeless lr 1e-12. It runs twice in fresh sweep dirs, once with the median pruner (2 startup trials,
no warm-up: the hopeless trials stop at their first validation, step 2 of 6) and once with `pruner=none` (every
trial trains its 6 steps); the same jobs report to the study either way. Printed and written to --out
(benchmarks/prune_vs_full_<launcher>.json): per study the wall time of the whole multirun, each trial's state, its
reported steps and run time, the sweep summary's pruned step and saved GPU-hours, and the wall time saved. The
pruned study runs first (colder caches: if anything, against it). Needs an otherwise idle machine to mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from training_helpers import HOPELESS, PRUNING_EPOCHS, TINY_TRAIN, slurm_launcher  # noqa: E402  (the tests' study)

FOUR = [*HOPELESS, *PRUNING_EPOCHS, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
PRUNERS = {
    "median": [
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    ],
    "none": ["hydra/sweeper/pruner=none"],
}


def launcher_overrides(launcher: str, partition: str) -> list[str]:
    """conftest.slurm_launcher(partition) for SLURM; lr_optuna's own local launcher otherwise."""
    if launcher == "local":
        return ["hydra/launcher=local"]
    return slurm_launcher(partition)


def run_study(name: str, sweep: Path, launcher: list[str], timeout: float) -> dict:
    """One multirun of the study in a fresh `sweep` dir; its wall time, trials and sweep summary."""
    import optuna

    from neuromf.sweep.storage import find_storage, open_storage

    if sweep.exists():
        shutil.rmtree(sweep)  # a left-over study would resume ("already has its 4 trials") and measure nothing
    cmd = [sys.executable, "-m", "neuromf.train", "-m", "sweep=lr_optuna", *launcher, f"hydra.sweep.dir={sweep}",
           *TINY_TRAIN, *PRUNERS[name], *FOUR]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=sweep.parent, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    (sweep.parent / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"[{name}] multirun failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    storage = find_storage(sweep)
    study = optuna.load_study(study_name="lr_optuna", storage=open_storage(storage))
    trials = []
    for t in sorted(study.get_trials(), key=lambda t: t.number):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "baseline": bool(t.user_attrs.get("baseline", False)),
                "lr": t.user_attrs.get("optim.lr", t.params.get("optim.lr")),  # fixed on the command line
                "params": t.params,
                "reported_steps": sorted(t.intermediate_values),
                "value": t.value,
                "seconds": seconds,
            }
        )
    summary_path = sweep / "sweep_summary.json"
    summary = json.loads(summary_path.read_text())["runs"] if summary_path.exists() else []
    return {
        "pruner": name,
        "storage": storage,
        "wall_s": round(wall, 1),
        "trial_s_total": round(sum(t["seconds"] or 0 for t in trials), 1),
        "states": [t["state"] for t in trials],
        "trials": trials,
        "summary": [
            {k: r.get(k) for k in ("job", "status", "pruned_step", "saved_gpu_h", "objective")} for r in summary
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launcher", choices=("slurm", "local"), default="slurm")
    parser.add_argument("--partition", default=os.environ.get("SLURM_LOCAL_PARTITION", "local"))
    parser.add_argument("--work", type=Path, default=None, help="where the sweep dirs go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/prune_vs_full_<launcher>.json")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per study")
    args = parser.parse_args(argv)
    out = args.out or REPO / "benchmarks" / f"prune_vs_full_{args.launcher}.json"
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        raise SystemExit("no sbatch: run scripts/slurm-local.sh start first, or pass --launcher local")

    from neuromf.data.demo import ensure_demo

    ensure_demo("small")  # built once here; the jobs would otherwise race to build it
    work = args.work or Path(tempfile.mkdtemp(prefix="prune_vs_full_"))
    work.mkdir(parents=True, exist_ok=True)
    launcher = launcher_overrides(args.launcher, args.partition)
    studies = {name: run_study(name, work / name, launcher, args.timeout) for name in ("median", "none")}

    pruned, full = studies["median"], studies["none"]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "launcher": args.launcher,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "work_dir": str(work),
        "studies": studies,
        "saved_wall_s": round(full["wall_s"] - pruned["wall_s"], 1),
        "wall_ratio_pruned_to_full": round(pruned["wall_s"] / full["wall_s"], 3),
        "saved_trial_s": round(full["trial_s_total"] - pruned["trial_s_total"], 1),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    for s in studies.values():
        print(f"pruner={s['pruner']:6s} wall {s['wall_s']:7.1f} s  trial time {s['trial_s_total']:7.1f} s  "
              f"states {s['states']}")  # fmt: skip
        for t in s["trials"]:
            tag = "  (baseline)" if t["baseline"] else ""
            print(f"    trial {t['number']}: {t['state']:8s} lr={t['lr']} steps {t['reported_steps']} "
                  f"{t['seconds'] or 0:.1f} s{tag}")  # fmt: skip
    print(f"pruned / full wall time: {result['wall_ratio_pruned_to_full']} (saved {result['saved_wall_s']} s); "
          f"written {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
