"""The report's shared computations: runs grouped into arms, statistics over seeds (Student t-intervals, paired and
Welch tests, Holm), the tables, reference levels, the cost and provenance tables and the figures. The sections
(``neuromf.report.sections``) read them from one ``ReportContext`` (``neuromf.report.context``)."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from neuromf.evaluation.registry import metric_direction
from neuromf.meanflow.registry import all_terms, objective_class
from neuromf.run_dir import RunDir
from neuromf.tracking.keys import metric_base
from neuromf.tracking.metrics import RunRecord, device_count, is_replicate_key
from neuromf.tracking.redact import MASK, redact_text
from neuromf.tracking.run import flat_config
from neuromf.tracking.safe_load import UnsafeCheckpointError, load_tensors_only

# Loss terms compared per term (never train/loss_raw: it is the sum of an arm's terms), every objective's
# (neuromf/meanflow/contract.py), and across arms only where the term measures the same quantity there.
LOSS_TERMS = [("final", f"train/{t}") for t in all_terms()] + [("best", f"val/{t}") for t in all_terms()]
CONFIDENCE = 0.95  # of every interval in the report (Student t: valid at the 3 seeds an arm usually has)
NO_STATS = "n = 1: no statistics"
_EVAL_KEY = re.compile(r"^val/(?!loss)[^/]+(/nfe\d+)?$")


_WARNED: set[str] = set()  # the lines warn_skipped printed for the report being built (build_report clears it)


def warn_skipped(path: Path, reason: object) -> None:
    """One line on stderr naming a file of the sweep dir the report cannot use (unreadable, unsafe) and skips; once
    per report, however many sections read the file."""
    line = f"warning: skipped {path}: {redact_text(str(reason).strip().splitlines()[0] if str(reason).strip() else '')}"
    if line not in _WARNED:
        _WARNED.add(line)
        print(line, file=sys.stderr)


# ----------------------------------------------------------------------------------------- grouping
def sweep_labels(sweep_dirs: list[Path]) -> list[str]:
    """Short unique labels for sweep dirs (dir name, or parent/name when names clash)."""
    names = [p.resolve().name for p in sweep_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in sweep_dirs]


# resolved-config keys that do not make another arm: the replicate seed and where / how a run was launched, logged
# or stored (fnmatch patterns); runs equal in every other key are one arm, whichever sweep dir they are in
POOL_IGNORED = (
    "seed",
    "sweep_name",
    "tag",
    "hydra.*",
    "optuna.*",
    "resume.*",
    "logger.*",
    "ckpt_path",
    "raise_on_failure",
    "torch_threads",
    "data.latent_dir",
    "data.num_workers",
    "data.cache_in_memory",
    "eval.cache_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.diagnostics.*",
    "callbacks.samples.*",
    "callbacks.checkpoint.every_n_train_steps",
)


def pool_ignored(key: str) -> bool:
    """True for a config key that does not tell arms apart: a replicate key (seed and what derives from it, e.g.
    data.seed: ${seed}, resolved) or one of POOL_IGNORED."""
    return is_replicate_key(key) or any(fnmatch.fnmatchcase(key, pattern) for pattern in POOL_IGNORED)


def arm_identity(record: RunRecord) -> str:
    """What makes a run's arm: its resolved config minus POOL_IGNORED keys; the overrides minus seed for a run
    whose config holds nothing else (an old or a hand-written run dir)."""
    flat = {k: v for k, v in flat_config(record.config or {}).items() if not pool_ignored(k)}
    if flat:
        return json.dumps(["config", flat], sort_keys=True, default=str)
    return json.dumps(["overrides", {k: v for k, v in record.arm.items() if not pool_ignored(k)}], sort_keys=True)


def assign_arms(records: list[RunRecord], sweeps: list[str] | None = None) -> list[str]:
    """Arm label per run. Runs with the same arm_identity are one arm, pooled across sweep dirs; the label is the
    overrides (minus seed) that vary across the arms, prefixed by the sweep(s) when two arms would read the same."""
    sweeps = sweeps if sweeps is not None else [""] * len(records)
    ids = [arm_identity(r) for r in records]
    first = {i: records[ids.index(i)] for i in dict.fromkeys(ids)}
    keys = sorted({k for r in first.values() for k in r.arm})
    varying = [k for k in keys if len({r.arm.get(k) for r in first.values()}) > 1]
    label = {}
    for i, r in first.items():
        shown = varying or list(r.arm)
        label[i] = ", ".join(f"{k}={r.arm.get(k, '-')}" for k in shown) or "(defaults)"
    for i in first:
        if sum(v == label[i] for v in label.values()) > 1:  # same overrides, other configs: say where they ran
            where = "+".join(dict.fromkeys(s for s, j in zip(sweeps, ids, strict=True) if j == i))
            label[i] = f"{where}: {label[i]}" if where else label[i]
    seen: dict[str, int] = {}
    for i in first:
        seen[label[i]] = seen.get(label[i], 0) + 1
        if seen[label[i]] > 1:
            label[i] = f"{label[i]} (config {seen[label[i]]})"
    return [label[i] for i in ids]


def _sort_key(key: str):
    """Evaluation keys ordered by metric, then step count."""
    m = re.match(r"^(.*)/nfe(\d+)$", key)
    return (m.group(1), int(m.group(2))) if m else (key, -1)


def metric_columns(records: list[RunRecord]) -> list[tuple[str, str]]:
    """(aggregate, key) columns: the loss terms and every evaluation metric (``val/<m>[/nfeN]``) that at least
    one run logged, found by pattern; best = min, or max for higher-is-better metrics."""
    logged = {k for r in records for k in r.final}
    cols = [(agg, k) for agg, k in LOSS_TERMS if k in logged]
    evals = sorted((k for k in logged if _EVAL_KEY.match(k) and k != "val/eval_time_s"), key=_sort_key)
    return cols + [("best" if metric_direction(k) else "final", k) for k in evals]


def _quantity(config: dict, term: str) -> dict | None:
    """What ``term`` measures in a run of ``config`` (the objective's `quantity`), None when unknown."""
    if not config:
        return None
    try:
        return json.loads(objective_class(config.get("loss")).quantity(config, term))
    except (ValueError, ImportError, TypeError, AttributeError):
        return None


def incomparable_terms(records: list[RunRecord]) -> dict[str, str]:
    """Loss keys (``train/loss_u``, ...) that measure different quantities in different runs -> why (the settings
    that differ). A term's value depends on the objective, the tangent / head, the time sampler and the distance:
    e.g. on an exact Gaussian flow a perfect model's loss_u is lower with an exact v-head tangent than with the
    conditional v, so such values rank the objectives' noise, not the models. Runs without a config are skipped."""
    out = {}
    for _, key in LOSS_TERMS:
        term = key.split("/", 1)[1]
        found = [q for r in records if key in r.final and (q := _quantity(r.config, term)) is not None]
        if len({json.dumps(q, sort_keys=True) for q in found}) < 2:
            continue
        flats = [flat_config(q) for q in found]
        differ = sorted(k for k in {k for f in flats for k in f} if len({json.dumps(f.get(k)) for f in flats}) > 1)
        names = {"objective": "the objective", "v_head": "the tangent (v-head v_hat or conditional v)"}
        out[key] = ", ".join(names.get(k, k) for k in differ)
    return out


# ------------------------------------------------------------------------------------- config diff
def config_diff(configs: list[dict], arms: list[str]) -> tuple[pd.DataFrame, dict, list[str]]:
    """Resolved-config differences between arms.

    Returns (table: one row per key whose value differs between arms, one column per arm, in arm order;
    fixed: {key: value} equal in every run; within: keys that vary inside an arm, e.g. seed)."""
    flats = [flat_config(c) for c in configs]
    keys = sorted({k for f in flats for k in f})
    order = list(dict.fromkeys(arms))
    rows, fixed, within = {}, {}, []
    for key in keys:
        per_arm = {}
        for f, arm in zip(flats, arms, strict=True):
            per_arm.setdefault(arm, set()).add(json.dumps(f.get(key, "<absent>"), default=str))
        values = set().union(*per_arm.values())
        if len(values) == 1:
            fixed[key] = json.loads(next(iter(values)))
            continue
        if any(len(v) > 1 for v in per_arm.values()):
            within.append(key)
        if len({frozenset(v) for v in per_arm.values()}) > 1:
            rows[key] = [
                ", ".join(sorted(json.loads(x) if x.startswith('"') else x for x in per_arm[a])) for a in order
            ]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=order)
    table.index.name = "key"
    return table, fixed, within


# ------------------------------------------------------------------------------------------- stats
def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student t-interval of the mean, mean ± t_{(1+c)/2, n-1} s / sqrt(n) (scipy.stats.t): exact for normal values
    at any n >= 2, where a bootstrap of 3 values is at most their range. NaNs for n < 2; (x, x) for equal values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    lo, hi = stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(lo), float(hi)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs kept and not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def compare(arm: dict, best: dict) -> dict:
    """Difference arm - best of the objective. Seed-paired t-test when >= 2 seeds are shared, else Welch when
    both have n >= 2, else no test. ``arm`` / ``best``: {seed: value}."""
    a, b = np.array(list(arm.values()), float), np.array(list(best.values()), float)
    out = {"diff": float(a.mean() - b.mean()) if len(a) and len(b) else math.nan}
    shared = sorted(set(arm) & set(best), key=str)
    if len(shared) >= 2:
        x, y = np.array([arm[s] for s in shared], float), np.array([best[s] for s in shared], float)
        if np.ptp(x - y) == 0:
            return out | {"test": f"paired ({len(shared)} seeds): constant difference", "diff": float((x - y)[0])}
        res = stats.ttest_rel(x, y)
        ci = res.confidence_interval(CONFIDENCE)  # the paired t-interval of the mean difference
        return out | {
            "test": f"paired t ({len(shared)} seeds)",
            "diff": float(np.mean(x - y)),
            "p": float(res.pvalue),
            "ci": (float(ci.low), float(ci.high)),
        }
    if len(a) >= 2 and len(b) >= 2:
        res = stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(CONFIDENCE)  # Welch's t-interval of the difference of the means
        return out | {"test": "Welch t", "p": float(res.pvalue), "ci": (float(ci.low), float(ci.high))}
    return out | {"test": NO_STATS}


# ------------------------------------------------------------------------------------------- tables
def run_table(records: list[RunRecord], arms: list[str], sweeps: list[str] | None = None) -> pd.DataFrame:
    """One row per run: arm, sweep, seed, status, objective, loss terms, evaluation metrics, notes, path."""
    cols = metric_columns(records)
    sweeps = sweeps if sweeps is not None else [""] * len(records)
    rows = []
    for r, arm, sweep in zip(records, arms, sweeps, strict=True):
        row = {"arm": arm, "sweep": sweep, "seed": r.seed, "status": r.status, "used": r.ok, "objective": r.objective}
        for agg, m in cols:
            row[f"{agg} {m}"] = getattr(r, agg).get(m, np.nan)
        row["notes"] = "; ".join(r.notes)
        row["path"] = str(r.path)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def arm_table(runs: pd.DataFrame, mode: str = "min") -> pd.DataFrame:
    """Per arm: n, mean / sample std (ddof=1) of the objective and of every metric column, the Student t 95% CI of
    the objective's mean, rank (1 = best mean objective), and the comparison with the best arm (seed-paired t-test where
    the arms share seeds, else Welch; Holm-adjusted across arms)."""
    metric_cols = [c for c in runs.columns if c.startswith(("best ", "final "))]
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        used = g[g["used"]]
        row = {"arm": arm, "n": len(used), "n_runs": len(g), "n_excluded": int((~g["used"]).sum())}
        row["seeds"] = ", ".join(str(s) for s in used["seed"])
        row["sweeps"] = ", ".join(str(s) for s in dict.fromkeys(g["sweep"])) if "sweep" in g else ""
        row["running"] = int((g["status"] == "running").sum())
        row["excluded"] = ", ".join(
            f"seed {s}: {st}" for s, st in zip(g.loc[~g["used"], "seed"], g.loc[~g["used"], "status"], strict=True)
        )
        for col in ["objective", *metric_cols]:
            vals = used[col].astype(float).dropna().to_numpy()
            row[f"{col} mean"], row[f"{col} std"] = _mean_std(vals)
            if col == "objective":
                row["objective ci low"], row["objective ci high"] = t_interval(vals)
        rows.append(row)
    table = pd.DataFrame(rows)
    score = table["objective mean"] if mode == "min" else -table["objective mean"]
    table["rank"] = score.rank(method="min", na_option="keep")
    table = table.assign(_s=score).sort_values("_s", na_position="last", kind="stable").drop(columns="_s")
    table = table.reset_index(drop=True)
    for col in ("p vs best", "diff vs best", "ci low", "ci high", "p holm"):
        table[col] = math.nan
    table["test"] = ""
    if len(table) and not math.isnan(table.loc[0, "objective mean"]):

        def by_seed(arm):
            """{seed: objective}; keyed by run path when a seed repeats (pooled sweeps ran it twice): no pairing."""
            g = runs[(runs["arm"] == arm) & runs["used"]]
            keys = g["seed"] if g["seed"].is_unique else g["path"]
            return dict(zip(keys, g["objective"].astype(float), strict=True))

        best = by_seed(table.loc[0, "arm"])
        for i in range(1, len(table)):
            vals = by_seed(table.loc[i, "arm"])
            if not vals:
                continue
            c = compare(vals, best)
            table.loc[i, ["diff vs best", "test"]] = [c["diff"], c["test"]]
            if "p" in c:
                table.loc[i, ["p vs best", "ci low", "ci high"]] = [c["p"], *c["ci"]]
        table["p holm"] = holm(table["p vs best"].to_numpy())
    return table


# ------------------------------------------------------------------------------ final evaluation
def read_final(record: RunRecord) -> dict | None:
    """The run's final test-split evaluation (<run>/eval/final.json), None without one (or unreadable: skipped
    with one line naming it)."""
    path = RunDir(record.path).eval_final  # written by python -m neuromf.evaluate
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise ValueError("no 'metrics' object")
        return data
    except ValueError as err:  # not JSON, not text, or not the evaluation's file
        warn_skipped(path, f"not the final evaluation's JSON ({type(err).__name__}: {err})")
        return None


def final_tables(
    records: list[RunRecord], arms: list[str], metric: str, mode: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per arm, per run) tables of the final test-split evaluation, for the objective's metric at every evaluated
    step count: per arm n, the selection (validation objective, best of the validation passes: it chose the
    checkpoint) and the test value, mean ± std [Student t CI] over the arm's evaluated runs. Empty without
    final.json files."""
    base = metric_base(metric) or metric.split("/")[-1]
    run_rows = []
    for r, arm in zip(records, arms, strict=True):
        final = read_final(r)
        if final is None:
            continue
        row = {"arm": arm, "seed": r.seed, "selection": r.objective, "checkpoint": final.get("checkpoint", "")}
        row["checkpoint step"] = final.get("checkpoint_step")
        for key, value in sorted(final["metrics"].items(), key=lambda kv: _sort_key(kv[0])):
            if key.startswith(f"test/{base}/nfe") and isinstance(value, int | float):
                row[key] = float(value)
        row["note"] = final.get("note") or ""
        run_rows.append(row)
    runs = pd.DataFrame(run_rows)
    if runs.empty:
        return runs, runs
    test_cols = [c for c in runs.columns if c.startswith("test/")]
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        row = {"arm": arm, "n": len(g), "seeds": ", ".join(str(s) for s in g["seed"])}
        for col, name in [("selection", f"selection: val {metric} (best of the validation passes)")] + [
            (c, f"{c} ({'↓' if mode == 'min' else '↑'})") for c in test_cols
        ]:
            vals = g[col].astype(float).dropna().to_numpy()
            m, sd = _mean_std(vals)
            row[name] = _cell(m, sd, *t_interval(vals), n=len(vals))
        rows.append(row)
    return pd.DataFrame(rows), runs


# ------------------------------------------------------------------------------- reference levels
# the evaluation's reference sets (neuromf/evaluation/callback.py), best to worst: real training latents (the
# floor), one of them repeated with small noise (a collapsed sampler), Gaussian noise latents (the ceiling)
REFERENCE_NAMES = {"real": "real floor", "collapsed": "collapsed", "noise": "noise ceiling"}
REFERENCE_COLORS = {"real": "g", "collapsed": "tab:orange", "noise": "r"}


def reference_levels(records: list[RunRecord]) -> dict[str, dict[str, float]]:
    """{metric: {"real": floor, "collapsed": ..., "noise": ceiling}} from eval/summary.json or
    ``ref/<metric>/<level>`` columns (mean over runs; the levels are computed once per data set, so runs agree)."""
    found: dict[tuple[str, str], list[float]] = {}
    for r in records:
        levels = {}
        path = RunDir(r.path).eval_summary
        if path.is_file():
            try:
                for m, lv in (json.loads(path.read_text()).get("reference") or {}).items():
                    levels |= {(m, k): float(v) for k, v in lv.items() if v is not None}
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:  # also: not text
                warn_skipped(path, f"not the evaluation's JSON summary ({type(err).__name__}: {err})")
        for key, v in r.final.items():
            parts = key.split("/")
            if parts[0] == "ref" and len(parts) == 3:
                levels.setdefault((parts[1], parts[2]), v)
        for k, v in levels.items():
            if math.isfinite(v):
                found.setdefault(k, []).append(v)
    out: dict[str, dict[str, float]] = {}
    for (m, level), vals in sorted(found.items()):
        out.setdefault(m, {})[level] = float(np.mean(vals))
    return out


# ------------------------------------------------------------------------------------------ samples
def _epoch_step(record: RunRecord, epoch: int) -> int | None:
    """The global step at the end of ``epoch`` (largest logged step of that epoch)."""
    path = RunDir(record.path).eval_summary
    try:  # the evaluation records the global step of each validation epoch
        for h in json.loads(path.read_text()).get("history") or [] if path.is_file() else []:
            if h.get("epoch") == epoch and h.get("step") is not None:
                return int(h["step"])
    except (json.JSONDecodeError, TypeError, ValueError):
        pass
    df = record.metrics
    if not len(df) or "epoch" not in df or "step" not in df:
        return None
    steps = df.loc[df["epoch"] == epoch, "step"].dropna()
    return int(steps.max()) if len(steps) else None


def sample_gallery(records: list[RunRecord], arms: list[str]) -> list[dict]:
    """Per arm (its first run with samples): the tri-planar PNGs of the fixed-noise samples of the last sampled
    epoch at the smallest and the largest step count, with caption fields."""
    items = []
    for arm in dict.fromkeys(arms):
        members = sorted(
            (r for r, a in zip(records, arms, strict=True) if a == arm), key=lambda r: (not r.ok, str(r.seed))
        )
        for r in members:
            epochs = sorted(RunDir(r.path).samples.glob("epoch_*"))
            epochs = [e for e in epochs if list(e.glob("nfe_*/*.png"))]
            if not epochs:
                continue
            last = epochs[-1]
            nfes = sorted(int(d.name.split("_")[1]) for d in last.glob("nfe_*") if list(d.glob("*.png")))
            epoch = int(last.name.split("_")[1])
            step = _epoch_step(r, epoch)
            for nfe in dict.fromkeys([nfes[0], nfes[-1]]):
                for png in sorted((last / f"nfe_{nfe}").glob("*.png")):
                    items.append({"arm": arm, "seed": r.seed, "nfe": nfe, "epoch": epoch, "step": step, "png": png})
            break
    return items


def real_previews(records: list[RunRecord], out: Path, n: int = 2) -> tuple[list[Path], str | None]:
    """Tri-planar PNGs of ``n`` real validation volumes, decoded by the datamodule of the first run's config
    (PNGs the run already saved under ``real/`` are used as they are). Returns (paths, why none)."""
    for r in records:
        existing = sorted((r.path / "real").glob("*.png"))
        if existing:
            return existing[:n], None
    cfg = next((r.config for r in records if r.config.get("data")), None)
    if cfg is None:
        return [], "no run has a data config"
    try:
        from neuromf.instantiate import build

        data = {k: v for k, v in cfg["data"].items() if k != "mask_ratio"}
        scratch = Path(tempfile.mkdtemp(prefix="real-", dir=out))
        dm = build(data, run_dir=str(scratch), expected_channels=cfg["model"]["in_channels"])
        dm.prepare_data()
        dm.setup("fit")
        latents = dm.val_latents()[:n]
        paths = [dm.save_sample(z, out / f"real_val_{i:02d}")[-1] for i, z in enumerate(latents)]
        shutil.rmtree(scratch, ignore_errors=True)
        for nii in out.glob("real_val_*.nii.gz"):
            nii.unlink()
        return [Path(p) for p in paths], None if paths else "no validation latents"
    except Exception as exc:  # the data or its decoder is not available where the report runs
        return [], f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------- cost
def _wandb_summary(run_dir: Path) -> dict:
    files = sorted(run_dir.glob("wandb/*run-*/files/wandb-summary.json"), key=lambda p: p.stat().st_mtime)
    try:
        return json.loads(files[-1].read_text()) if files else {}
    except ValueError as err:  # not JSON, or not text at all
        warn_skipped(files[-1], f"not W&B's JSON summary ({type(err).__name__}: {err})")
        return {}


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def wall_time_s(r: RunRecord) -> float | None:
    """Seconds the run ran: W&B's ``_runtime``, else from its start (provenance / config file) to status.json."""
    runtime = _wandb_summary(r.path).get("_runtime")
    if isinstance(runtime, int | float) and runtime > 0:
        return float(runtime)
    start = _parse_time((r.status_data.get("provenance") or {}).get("started"))
    cfg_file = RunDir(r.path).config
    start = start or (cfg_file.stat().st_mtime if cfg_file.is_file() else None)
    status = RunDir(r.path).status
    end = time.time() if r.status == "running" else (status.stat().st_mtime if status.is_file() else None)
    return max(0.0, end - start) if start and end else None


def parameter_count(run_dir: Path) -> int | None:
    """Parameters of the network in the run's newest checkpoint (``net.*`` tensors), None without one. Loaded as
    data only (neuromf/tracking/safe_load.py): an unsafe or unreadable checkpoint is skipped with one line naming it."""
    ckpts = sorted(RunDir(run_dir).checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return None
    try:
        ckpt = load_tensors_only(ckpts[-1], mmap=True)
    except UnsafeCheckpointError as err:  # its message starts with the path
        warn_skipped(ckpts[-1], str(err).removeprefix(f"{ckpts[-1]}: "))
        return None
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    n = sum(int(v.numel()) for k, v in state.items() if str(k).startswith("net.") and hasattr(v, "numel"))
    return n or None


def cost_table(records: list[RunRecord], arms: list[str]) -> pd.DataFrame:
    """Per arm: runs, wall time (total and mean per run), device-hours (devices x nodes x time), GPU-hours
    on GPU, mean training samples/s, parameters, peak GPU memory where logged."""
    rows = []
    for arm in dict.fromkeys(arms):
        members = [r for r, a in zip(records, arms, strict=True) if a == arm]
        walls, dev_h, gpu, sps, peaks, params = [], 0.0, False, [], [], None
        for r in members:
            w = wall_time_s(r)
            tr = r.config.get("trainer", {}) if r.config else {}
            gpu = gpu or tr.get("accelerator") in ("gpu", "cuda")
            if w is not None:
                walls.append(w)
                dev_h += device_count(tr) * w / 3600
            s = r.series("train/samples_per_s")
            if len(s):
                sps.append(float(s.median()))
            if "train/peak_mem_gb" in r.best:
                peaks.append(float(r.metrics["train/peak_mem_gb"].max()))
            params = params or parameter_count(r.path)
        rows.append(
            {
                "arm": arm,
                "runs": len(members),
                "wall time total (h)": sum(walls) / 3600 if walls else math.nan,
                "wall time per run (min)": np.mean(walls) / 60 if walls else math.nan,
                "device-hours": dev_h if walls else math.nan,
                "GPU-hours": dev_h if walls and gpu else math.nan,
                "samples/s (median)": float(np.mean(sps)) if sps else math.nan,
                "parameters": params if params else "",
                "peak GPU memory (GiB)": max(peaks) if peaks else math.nan,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- provenance
def sweep_command(sweep_dir: Path) -> str | None:
    """The launching command, rebuilt from ``<sweep>/multirun.yaml`` (Hydra's overrides of the multirun), redacted."""
    path = sweep_dir / "multirun.yaml"
    try:
        ov = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("overrides") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):  # ValueError: not text
        return None
    if not ov:
        return None
    words = ["python -m neuromf.train -m", *map(str, ov.get("hydra", [])), *map(str, ov.get("task", []))]
    return redact_text(" ".join(words))


def provenance_table(records: list[RunRecord], arms: list[str]) -> pd.DataFrame:
    """Per run: arm, seed, status, path, W&B run id and local W&B dir, git commit (+dirty) and start time."""
    rows = []
    for r, arm in zip(records, arms, strict=True):
        prov = r.status_data.get("provenance") or {}
        wid_file = RunDir(r.path).wandb_id
        wid = r.status_data.get("wandb_run_id") or (wid_file.read_text().strip() if wid_file.is_file() else "")
        wdirs = sorted(r.path.glob(f"wandb/*run-*-{wid}")) if wid else []
        commit = prov.get("git_commit")
        rows.append(
            {
                "arm": arm,
                "seed": r.seed,
                "status": r.status,
                "W&B run id": wid or "",
                "W&B dir": str(wdirs[-1]) if wdirs else "",
                "git commit": (commit[:12] + (" (dirty)" if prov.get("git_dirty") else "")) if commit else "",
                "started": prov.get("started", ""),
                "path": str(r.path),
            }
        )
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- optuna
SAVED_COL = "device-h saved (est.)"
IMPORTANCE_SEED = 0


def device_kind(run_dir: Path) -> str:
    """'GPU' / 'CPU' from the run's ``trainer.accelerator``; 'unknown' when it is not recorded or 'auto'."""
    from neuromf.tracking.metrics import read_config

    try:
        acc = ((read_config(run_dir) or {}).get("trainer") or {}).get("accelerator")
    except (OSError, ValueError):
        acc = None
    return {"gpu": "GPU", "cuda": "GPU", "cpu": "CPU"}.get(str(acc).lower(), "unknown")


def optuna_storage(sweep_dir: Path) -> tuple[str, str | None] | None:
    """(storage URL, study name) of an Optuna sweep: the sweeper config in multirun.yaml, or <sweep>/optuna.db."""
    try:
        sweeper = ((yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}).get("hydra") or {}).get("sweeper")
    except (OSError, yaml.YAMLError, AttributeError):
        sweeper = None
    except ValueError as err:  # not text
        warn_skipped(sweep_dir / "multirun.yaml", f"not YAML ({type(err).__name__}: {err})")
        sweeper = None
    sweeper = sweeper or {}
    storage, name = sweeper.get("storage"), sweeper.get("study_name")
    if storage and f":{MASK}@" in str(storage):  # its password was masked when it was written: not reachable
        print(f"note: {sweep_dir / 'multirun.yaml'}: the study's storage URL {storage} has its password masked; "
              "the report reaches such a study with a password-free URL and ~/.pgpass or PGPASSWORD "
              "(docs/slurm.md)", file=sys.stderr)  # fmt: skip
        storage = None
    if storage and "${" not in str(storage) and str(storage) != "auto":
        for prefix in ("sqlite:///", "journal:///"):  # file storages: only when the file is there
            if str(storage).startswith(prefix):
                if Path(str(storage)[len(prefix) :]).is_file():
                    return str(storage), name
                break
        else:
            return str(storage), name
    from neuromf.sweep.storage import find_storage

    found = find_storage(sweep_dir)  # <sweep>/optuna.journal or <sweep>/optuna.db
    return (found, name) if found else None


def optuna_section(sweep_dir: Path, out: Path) -> dict | None:
    """Trials (state, value, params), best trial, optimisation history and parameter importances of the
    sweep's Optuna study (Optuna's own functions); None when the sweep has no study."""
    found = optuna_storage(sweep_dir)
    if found is None:
        return None
    import matplotlib.pyplot as plt
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from neuromf.sweep.storage import open_storage
    from neuromf.sweep.summary import pruning_savings

    storage, name = found
    opened = open_storage(storage)
    name = name or optuna.get_all_study_names(opened)[0]
    study = optuna.load_study(study_name=name, storage=opened)
    rows, kinds = [], set()
    for t in study.trials:
        row = {"trial": t.number, "state": t.state.name, "value": t.value if t.value is not None else math.nan}
        row |= {f"param {k}": v for k, v in t.params.items()}
        row["duration (s)"] = t.duration.total_seconds() if t.duration else math.nan
        run_dir = t.user_attrs.get("run_dir")
        saved = pruning_savings(Path(run_dir)) if run_dir and Path(run_dir).is_dir() else {}
        if t.state == optuna.trial.TrialState.PRUNED:  # the last reported step, when the run dir is elsewhere
            steps = sorted(t.intermediate_values)
            saved.setdefault("pruned_step", steps[-1] if steps else None)
        row["pruned at step"] = saved.get("pruned_step")
        row[SAVED_COL] = saved.get("saved_gpu_h")  # sweep_summary's name; devices x time, GPUs or not
        if saved.get("saved_gpu_h"):
            kinds.add(device_kind(Path(run_dir)))
        row["note"] = t.user_attrs.get("fail_reason") or ("baseline" if t.user_attrs.get("baseline") else "")
        rows.append(row)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    res = {
        "study": name,
        "storage": redact_text(storage),
        "direction": study.direction.name,
        "trials": pd.DataFrame(rows),
    }
    res["states"] = pd.Series([t.state.name for t in study.trials]).value_counts().to_dict()
    saved = pd.to_numeric(res["trials"][SAVED_COL], errors="coerce") if rows else pd.Series(dtype=float)
    res["saved_device_h"] = float(saved.sum())
    res["saved_on"] = kinds.pop() if len(kinds) == 1 else "mixed" if kinds else None
    res["best"] = (
        {"trial": study.best_trial.number, "value": study.best_value, "params": study.best_params} if complete else None
    )
    res["images"], res["notes"] = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        from optuna.visualization import matplotlib as ovm

        if complete:
            ax = ovm.plot_optimization_history(study)
            ax.figure.set_size_inches(7, 4)
            ax.figure.tight_layout()
            ax.figure.savefig(out / "optuna_history.png", dpi=110)
            plt.close(ax.figure)
            res["images"]["Optuna optimisation history"] = out / "optuna_history.png"
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)  # same report each time
            res["importances"] = optuna.importance.get_param_importances(study, evaluator=evaluator)
            ax = ovm.plot_param_importances(study, evaluator=evaluator)
            ax.figure.set_size_inches(7, 3)
            ax.figure.tight_layout()
            ax.figure.savefig(out / "optuna_importances.png", dpi=110)
            plt.close(ax.figure)
            res["images"]["Optuna parameter importances"] = out / "optuna_importances.png"
        except (ValueError, RuntimeError) as exc:
            res["importances"] = {}
            res["notes"].append(f"parameter importances unavailable: {exc}")
    return res


# -------------------------------------------------------------------------------------------- plots
# Figures are saved FIG_WIDTH x DPI = 770 px wide and shown at that width (the page is wider), so FONT points are
# FONT x DPI / 72 ~ 15 px on screen: as large as the body text (15 px).
FIG_WIDTH, DPI, FONT = 7.0, 110, 10


def short(label: str, width: int = 28) -> str:
    """An arm label for a figure axis: at most ``width`` characters (the tables hold the full label)."""
    return label if len(label) <= width else label[: width - 1] + "…"


def draw_refs(ax, refs: dict | None, axis: str = "y", label_inside: bool = False) -> None:
    """The reference levels on an axis zoomed on the data: a dotted line for a level inside the data's range (with a
    margin), else its name and value written at the edge it lies beyond (the axis is not stretched to it).
    label_inside: a line inside is named on the plot at its left end (narrow panels, where a legend would cover the
    edge labels) instead of through the legend."""
    import matplotlib.transforms as mtransforms

    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    outside = {"low": [], "high": []}
    named: dict[float, tuple] = {}  # label_inside: value -> (level names, their label); one label per value
    for level, color in REFERENCE_COLORS.items():
        v = (refs or {}).get(level)
        if v is None or not math.isfinite(v):
            continue
        name = f"{REFERENCE_NAMES[level]} ({v:.3g})"
        if lo <= v <= hi:
            (ax.axhline if axis == "y" else ax.axvline)(v, color=color, ls=":", lw=1.2, label=None if label_inside
                                                         else name)  # fmt: skip
            if label_inside and axis == "y":
                key = float(f"{v:.3g}")
                if key in named:  # a level at the same value as an earlier one: one label names both
                    names, text = named[key]
                    names.append(REFERENCE_NAMES[level])
                    text.set_text(f"{' = '.join(names)} ({v:.3g})")
                    continue
                tr = mtransforms.blended_transform_factory(ax.transAxes, ax.transData)
                text = ax.text(0.02, v, name, color=color, ha="left", va="bottom", transform=tr, fontsize=FONT - 1)
                named[key] = ([REFERENCE_NAMES[level]], text)
        else:
            outside["high" if v > hi else "low"].append((name, color))
    for side, items in outside.items():
        for i, (name, color) in enumerate(items):
            arrow = ("↑" if axis == "y" else "→") if side == "high" else ("↓" if axis == "y" else "←")
            if axis == "y":
                tr = mtransforms.blended_transform_factory(ax.transAxes, ax.transAxes)
                y = 0.98 - 0.07 * i if side == "high" else 0.02 + 0.07 * i
                ax.text(0.99, y, f"{arrow} {name}", color=color, ha="right", va="top" if side == "high" else "bottom",
                        transform=tr, fontsize=FONT - 1)  # fmt: skip
            else:  # above the plot area, at the side the level lies beyond
                x = 1.0 if side == "high" else 0.0
                text = ", ".join(n for n, _ in items)
                ax.text(x, 1.02, f"{text} →" if side == "high" else f"← {text}", color=items[0][1],
                        ha="right" if side == "high" else "left", va="bottom", transform=ax.transAxes,
                        fontsize=FONT - 1)  # fmt: skip
                break
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)


def figure_style():
    """matplotlib rc for the report's figures: font sizes as large as the page's body text, saved at DPI."""
    import matplotlib.pyplot as plt

    return plt.rc_context(
        {
            "font.size": FONT,
            "axes.titlesize": FONT + 1,
            "axes.labelsize": FONT,
            "xtick.labelsize": FONT - 1,
            "ytick.labelsize": FONT - 1,
            "legend.fontsize": FONT - 1,
            "figure.titlesize": FONT + 1,
            "savefig.dpi": DPI,
        }
    )


def _curve_stats(records: list[RunRecord], key: str) -> pd.DataFrame:
    """Mean / std / count over runs of metric ``key`` per step (runs aligned on their logged steps)."""
    series = [r.series(key) for r in records]
    series = [s for s in series if len(s)]
    if not series:
        return pd.DataFrame()
    df = pd.concat(series, axis=1)
    return pd.DataFrame(
        {"mean": df.mean(axis=1), "std": df.std(axis=1, ddof=1).fillna(0.0), "n": df.count(axis=1)}
    ).sort_index()


SMOOTHING = 0.6  # W&B's default exponential-moving-average weight for the training curves
SMOOTH_MIN_POINTS = 10  # curves with fewer logged points (validation) are drawn as they are


def ema(values: pd.Series, weight: float) -> pd.Series:
    """W&B's smoothing: exponential moving average with debiasing (smoothed_t = sum w^(t-i)(1-w) x_i / (1-w^t))."""
    out, last, num = [], 0.0, 0
    for x in values.astype(float):
        if not math.isfinite(x):
            out.append(math.nan)
            continue
        num += 1
        last = last * weight + (1 - weight) * x
        out.append(last / (1 - weight**num))
    return pd.Series(out, index=values.index)


def plot_curves(records, arms, key, path: Path, refs: dict | None = None) -> bool:
    """Mean curve per arm (±1 std band when n > 1) over used runs, smoothed as W&B does (exponential moving average
    with weight SMOOTHING, the raw mean faint) when it has many points; excluded / running runs dashed grey; the
    axis zoomed on the curves, the reference levels drawn where they fall inside it and named at the edge where
    they do not. False if no data."""
    import matplotlib.pyplot as plt

    with figure_style():
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.6), constrained_layout=True)
        drawn, max_n, smoothed = False, 0, False
        for i, arm in enumerate(dict.fromkeys(arms)):
            members = [r for r, a in zip(records, arms, strict=True) if a == arm]
            cs = _curve_stats([r for r in members if r.ok], key)
            color = f"C{i % 10}"
            if len(cs):
                n = int(cs["n"].max())
                max_n = max(max_n, n)
                mean = cs["mean"]
                if len(cs) >= SMOOTH_MIN_POINTS:
                    ax.plot(cs.index, mean, color=color, alpha=0.25, lw=0.8)
                    mean, smoothed = ema(mean, SMOOTHING), True
                ax.plot(cs.index, mean, color=color, label=f"{short(arm)} (n={n})")
                if n > 1:
                    std = ema(cs["std"], SMOOTHING) if smoothed else cs["std"]
                    ax.fill_between(cs.index, mean - std, mean + std, color=color, alpha=0.15)
                drawn = True
            for r in members:
                s = r.series(key)
                if not r.ok and len(s):
                    ax.plot(
                        s.index,
                        s.values,
                        ls="--",
                        lw=0.8,
                        color="grey",
                        label=f"{short(arm)} seed {r.seed} ({r.status})",
                    )
                    drawn = True
        if drawn:
            ax.set_xlabel("training step")
            ax.set_ylabel(key)
            ax.set_yscale("log" if _all_positive(ax) else "linear")
            ax.margins(y=0.1)
            draw_refs(ax, refs)
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
            what = "mean ± std over seeds" if max_n > 1 else "one run per arm: n = 1"
            ax.set_title(f"{key} ({what}{f'; EMA {SMOOTHING}, raw faint' if smoothed else ''})")
            fig.savefig(path)
        plt.close(fig)
    return drawn


def _all_positive(ax) -> bool:
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20


def plot_objective_bars(arms_df: pd.DataFrame, runs: pd.DataFrame, key: str, path: Path, refs=None) -> bool:
    """Per arm its mean objective with the Student t 95% CI when n > 1 and the seeds as dots, on an axis zoomed on
    the arms; the reference levels (real floor, collapsed, noise ceiling) drawn where they fall inside it and named
    at the edge where they do not."""
    import matplotlib.pyplot as plt

    if not arms_df["objective mean"].notna().any():
        return False
    with figure_style():
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 1.4 + 0.4 * len(arms_df)), constrained_layout=True)
        y = np.arange(len(arms_df))
        mean = arms_df["objective mean"].to_numpy(float)
        lo, hi = arms_df["objective ci low"].to_numpy(float), arms_df["objective ci high"].to_numpy(float)
        err = np.clip(np.nan_to_num(np.vstack([mean - lo, hi - mean]), nan=0.0), 0, None)
        for i, arm in enumerate(arms_df["arm"]):
            vals = runs[(runs["arm"] == arm) & runs["used"]]["objective"].astype(float)
            ax.plot(vals, np.full(len(vals), i), "o", color="grey", alpha=0.5, ms=4)
        ax.errorbar(mean, y, xerr=err, fmt="s", color="tab:blue", ms=7, capsize=4, lw=2)
        ax.margins(x=0.15)
        ax.set_yticks(y, [short(a, 36) for a in arms_df["arm"]])
        ax.invert_yaxis()
        draw_refs(ax, refs, axis="x")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        ax.grid(axis="x", alpha=0.3)
        many = int(arms_df["n"].max()) > 1
        ax.set_xlabel(f"{key} (mean, t 95% CI; dots = seeds)" if many else f"{key} (n = 1 per arm: no CI)")
        fig.savefig(path)
        plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ writing
def _fmt(x) -> str:
    if isinstance(x, float | np.floating):
        return "" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def md_table(df: pd.DataFrame, index: bool = False) -> str:
    """GitHub markdown table (hand-written: pandas.to_markdown needs the optional tabulate package)."""
    if index:
        df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = "".join(
        "| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |\n" for row in df.itertuples(index=False)
    )
    return head + body


def _cell(mean: float, std: float, lo: float = math.nan, hi: float = math.nan, n: int = 2) -> str:
    if math.isnan(mean):
        return ""
    if n < 2:
        return f"{_fmt(mean)} ({NO_STATS})"
    text = f"{_fmt(mean)} ± {_fmt(std)}"
    return text + ("" if math.isnan(lo) else f" [{_fmt(lo)}, {_fmt(hi)}]")


def arm_summary(arms_df: pd.DataFrame) -> pd.DataFrame:
    """Compact view: rank, arm, state, n, seeds, objective mean ± std [t CI], comparison with the best."""
    out = pd.DataFrame(
        {
            "rank": arms_df["rank"].map(lambda r: "" if math.isnan(r) else int(r)),
            "arm": arms_df["arm"],
            "state": [
                f"running ({k} of {m})" if k else ("no usable run" if n == 0 else "done")
                for k, m, n in zip(arms_df["running"], arms_df["n_runs"], arms_df["n"], strict=True)
            ],
            "n": arms_df["n"],
            "seeds": arms_df["seeds"],
        }
    )
    if "sweeps" in arms_df and arms_df["sweeps"].str.contains(", ").any():  # pooled across sweep dirs
        out["sweeps"] = arms_df["sweeps"]
    out["objective"] = [
        _cell(m, s, lo, hi, n)
        for m, s, lo, hi, n in zip(
            arms_df["objective mean"],
            arms_df["objective std"],
            arms_df["objective ci low"],
            arms_df["objective ci high"],
            arms_df["n"],
            strict=True,
        )
    ]
    delta = []
    for i, row in arms_df.iterrows():
        if i == 0 or math.isnan(row["diff vs best"]):
            delta.append("best" if i == 0 and not math.isnan(row["objective mean"]) else "")
        elif row["test"] == NO_STATS:
            delta.append(f"{row['diff vs best']:+.4g} ({NO_STATS})")
        elif math.isnan(row["p vs best"]):
            delta.append(f"{row['diff vs best']:+.4g} ({row['test']})")
        else:
            delta.append(
                f"{row['diff vs best']:+.4g} [{row['ci low']:+.4g}, {row['ci high']:+.4g}], {row['test']}, "
                f"p = {row['p vs best']:.3g}, Holm p = {row['p holm']:.3g}"
            )
    out["Δ vs best [95% CI], test, p"] = delta
    out["excluded"] = arms_df["excluded"]
    return out


def metric_summary(arms_df: pd.DataFrame, refs: dict, prefix: tuple[str, ...]) -> pd.DataFrame:
    """Rows = metric columns starting with ``prefix`` ("best val/kid/nfe1", ...), columns = arms
    (mean ± std, or the single value with n = 1), plus the reference levels of each metric."""
    cols = [c[: -len(" mean")] for c in arms_df.columns if c.endswith(" mean") and c.startswith(prefix)]
    rows = {}
    for col in cols:
        key = col.split(" ", 1)[1]
        row = {
            a: ("—" if math.isnan(m) else _fmt(m) if n < 2 else f"{_fmt(m)} ± {_fmt(s)}")
            for a, m, s, n in zip(
                arms_df["arm"], arms_df[f"{col} mean"], arms_df[f"{col} std"], arms_df["n"], strict=True
            )
        }
        base = metric_base(key)
        if refs:
            for level, name in REFERENCE_NAMES.items():
                row[name] = _fmt(refs.get(base, {}).get(level, math.nan))
        d = metric_direction(key)
        rows[f"{col} ({'↓' if d == 'min' else '↑' if d == 'max' else '·'})"] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "metric"
    return df


def replace_dir(tmp: Path, out: Path) -> Path | None:
    """Move ``tmp`` to ``out``; an existing ``out`` is kept as ``<out>.prev-<timestamp>`` (returned)."""
    prev = None
    if out.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(out.stat().st_mtime))
        prev = out.with_name(f"{out.name}.prev-{stamp}")
        i = 1
        while prev.exists():
            prev, i = out.with_name(f"{out.name}.prev-{stamp}-{i}"), i + 1
        os.replace(out, prev)
    os.replace(tmp, out)
    return prev


def _sweep_objective(sweep_dirs: list[Path]) -> tuple[str | None, str | None]:
    """The objective key and mode of the sweep's composed config (first run with one), else the ``objective_key``
    the runs recorded in status.json (runs whose config predates the ``objective`` key)."""
    from neuromf.tracking.metrics import find_run_dirs, read_config
    from neuromf.tracking.run import read_status

    runs = [run for sd in sweep_dirs for run in (find_run_dirs(sd) if sd.is_dir() else [])]
    for run in runs:
        cfg = read_config(run)
        if cfg.get("objective"):
            return cfg["objective"], cfg.get("objective_mode")
    for run in runs:
        try:
            status = read_status(run)
        except (OSError, ValueError):  # load_run notes an unreadable status.json
            continue
        if status.get("objective_key"):
            return status["objective_key"], status.get("objective_mode")
    return None, None


def gap_closed(value: float, refs: dict[str, float], mode: str = "min") -> float:
    """Share of the noise-ceiling -> real-floor gap an objective value closes: 0 = noise, 1 = real (NaN without
    both reference levels). Works for either direction (the levels carry it)."""
    noise, real = refs.get("noise", math.nan), refs.get("real", math.nan)
    if not (math.isfinite(noise) and math.isfinite(real)) or noise == real or not math.isfinite(value):
        return math.nan
    return (noise - value) / (noise - real)


def untrained_warnings(arms_df: pd.DataFrame, obj_refs: dict[str, float], mode: str, least: float = 0.5) -> list:
    """A ⚠ block per arm whose mean objective closes less than `least` of the noise -> real gap (its samples are
    not clearly better than noise), or is no better than the collapsed reference (one real volume repeated): in
    both cases ranking the arm says little about the method."""
    blocks = []
    collapsed = obj_refs.get("collapsed", math.nan)
    for _, row in arms_df.iterrows():
        value = float(row["objective mean"])
        share = gap_closed(value, obj_refs, mode)
        if (
            math.isfinite(collapsed)
            and math.isfinite(value)
            and (value >= collapsed if mode == "min" else value <= collapsed)
        ):
            blocks.append(
                (
                    "p",
                    f"⚠ arm {row['arm']}: the objective ({value:.4g}) is no better than a collapsed sampler's "
                    f"({collapsed:.4g}: one real volume repeated with small noise), though it closes {share:.0%} of "
                    "the noise -> real gap: its samples are far from the data (look at the gallery); compare arms "
                    "only once they beat that level (train longer).",
                )
            )
        elif math.isfinite(share) and share < least:
            blocks.append(
                (
                    "p",
                    f"⚠ arm {row['arm']}: the objective closes only {share:.0%} of the gap between the noise "
                    f"ceiling ({obj_refs['noise']:.4g}) and the real floor ({obj_refs['real']:.4g}): its samples are "
                    "not clearly better than noise, so its rank says nothing about the method (train longer).",
                )
            )
    return blocks
