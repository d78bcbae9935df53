"""Read finished (or crashed) run dirs and sweep dirs back into Python objects.

A run dir is Hydra's output dir of one training run: ``.hydra/overrides.yaml``, ``.hydra/config.yaml``,
``metrics.csv`` (Lightning CSVLogger: sparse rows with columns ``step``, ``epoch`` and one column per metric,
empty where a metric was not logged on that row) and ``status.json``. A sweep dir holds one run dir per job.

What is read is redacted (neuromf/tracking/redact.py): a sweep dir written elsewhere may hold a URL password in
its Hydra files; nothing built from these records (report, dashboards, sweep summary) shows it.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from neuromf.evaluation.registry import DEFAULT_OBJECTIVE, interval_keys, metric_direction
from neuromf.run_dir import RunDir
from neuromf.tracking.redact import redact

REPLICATE_KEYS = ("seed",)  # keys that vary between the seeds of one arm by design (also any `<node>.seed`)


@dataclass
class RunRecord:
    """One run dir: its arm (overrides minus seed), status, objective and metric history."""

    path: Path
    overrides: list[str]
    arm: dict[str, str]
    seed: int | str | None
    status: str
    reason: str | None
    objective_key: str
    objective: float | None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # the composed config (.hydra/config.yaml)
    status_data: dict = field(default_factory=dict)  # status.json as written by the run

    @property
    def ok(self) -> bool:
        """True when the run completed with a finite objective (it counts in the arm statistics)."""
        return self.status == "completed" and self.objective is not None and math.isfinite(self.objective)

    def series(self, key: str) -> pd.Series:
        """Values of ``key`` indexed by step (NaN rows dropped, last value kept per step)."""
        if key not in self.metrics.columns or "step" not in self.metrics.columns:
            return pd.Series(dtype=float)
        df = self.metrics[["step", key]].dropna()
        return df.groupby("step")[key].last().astype(float)


def parse_override(text: str) -> tuple[str, str]:
    """Split one Hydra override ``[+|++|~]key=value`` into ``(key, value)``."""
    if "=" not in text:
        return text.lstrip("+~"), ""
    key, value = text.split("=", 1)
    return key.strip().lstrip("+~"), value.strip()


def is_replicate_key(key: str) -> bool:
    """A key whose value tells the seeds of one arm apart (seed, model.seed, ...), not the arm."""
    return key in REPLICATE_KEYS or key.endswith(".seed")


def is_arm_key(key: str) -> bool:
    """An overridden key that makes an arm: not a replicate key, not how the job is launched (hydra.*, hydra/...)
    and not the trial an Optuna sweeper passed (optuna.*)."""
    return not is_replicate_key(key) and not key.startswith(("hydra.", "hydra/", "optuna."))


def split_arm(overrides: list[str]) -> tuple[dict[str, str], str | None]:
    """The arm of a run from its overrides: ({key: value} of its arm keys, sorted; its seed or None). The one
    definition of an arm: the report (RunRecord.arm), the W&B tags and the sample labels use it."""
    arm: dict[str, str] = {}
    seed = None
    for ov in overrides:
        key, value = parse_override(str(ov))
        if is_replicate_key(key):
            seed = value
        elif is_arm_key(key):
            arm[key] = value
    return dict(sorted(arm.items())), seed


def _read_yaml_list(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of overrides, got {type(data).__name__}")
    return [redact(str(x)) for x in data]


def read_metrics_csv(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    """Load a CSVLogger metrics.csv; empty cells become NaN. ValueError naming the file if unreadable.

    A last row without its line end was cut off (a kill or a full disk mid-write; the logger writes whole lines):
    it is left out, and a note naming the file and what could be read is appended to `notes`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read metrics.csv ({exc})") from exc
    torn = b""
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
        data, torn = data[:end], data[end:]
    try:
        df = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except Exception as exc:  # pandas raises several parser error types
        raise ValueError(f"{path}: cannot parse metrics.csv ({exc})") from exc
    for col in df.columns:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if torn and notes is not None:
        steps = df["step"].dropna() if "step" in df.columns else pd.Series(dtype=float)
        upto = f", up to step {int(steps.max())}" if len(steps) else ""
        notes.append(
            f"{path}: last row cut off ({len(torn)} bytes without a line end: a kill or a full disk mid-write); "
            f"read {len(df)} complete rows{upto}, the cut row left out"
        )
    return df


def summarize(df: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Final (last logged) and best value of every metric column (maximum for higher-is-better evaluation
    metrics such as coverage, minimum otherwise; see ``neuromf.tracking.keys.metric_direction``)."""
    from neuromf.tracking.keys import metric_direction

    final, best = {}, {}
    for col in df.columns:
        if col in ("step", "epoch"):
            continue
        vals = df[col][np.isfinite(df[col])]
        if len(vals):
            final[col] = float(vals.iloc[-1])
            best[col] = float(vals.max() if metric_direction(col) == "max" else vals.min())
    return final, best


def device_count(trainer: dict) -> int:
    """Devices x nodes of a run's `trainer` config (`devices`: an int, or a list of device ids; anything else,
    such as "auto", counts as 1)."""
    devices = trainer.get("devices", 1)
    devices = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1
    nodes = trainer.get("num_nodes", 1) if isinstance(trainer.get("num_nodes", 1), int) else 1
    return devices * nodes


def read_config(run_dir: Path) -> dict:
    """The composed config of a run (``.hydra/config.yaml``, interpolations left as written, redacted); {} if
    absent."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        try:
            return redact(OmegaConf.to_container(cfg, resolve=True))
        except Exception:  # an interpolation needing Hydra's runtime (${hydra:...}, ${now:...})
            return redact(OmegaConf.to_container(cfg, resolve=False))
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the composed config ({exc})") from exc


def load_run(run_dir: str | Path, objective_key: str | None = None, mode: str = "min") -> RunRecord:
    """Read one run dir.

    ``objective_key`` overrides the one in status.json; the objective is then the best logged value of
    that metric (min, or max with ``mode="max"``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir not found: {run_dir}")
    overrides = _read_yaml_list(RunDir(run_dir).overrides)
    notes: list[str] = []
    status_path = RunDir(run_dir).status
    status: dict = {}
    if status_path.is_file():
        from neuromf.tracking.run import DamagedStatusError, read_status

        try:
            status = redact(read_status(run_dir))
        except DamagedStatusError as exc:
            notes.append(f"{exc}: the run's status is unknown")
        except ValueError as exc:  # not JSON, or not text at all
            notes.append(f"status.json unreadable ({exc})")
    if not overrides and status.get("overrides"):
        overrides = [str(x) for x in status["overrides"]]  # redacted with status
    arm, seed = split_arm(overrides)
    config = read_config(run_dir)
    if config.get("seed") is not None:
        seed = str(config["seed"])  # the composed value: also right when the sweep does not override it

    csv = RunDir(run_dir).metrics
    df = read_metrics_csv(csv, notes) if csv.is_file() else pd.DataFrame()
    final, best = summarize(df) if len(df) else ({}, {})
    state = status.get("status")
    if not csv.is_file():
        notes.append("no metrics.csv (crashed before the first logged step?)")
        state = state if state in ("failed", "diverged", "running") else "failed"
    elif state is None:
        if not status_path.is_file():
            notes.append("no status.json")
        state = "unknown"
    if status.get("reason"):
        notes.append(str(status["reason"]))

    key = objective_key or status.get("objective_key") or DEFAULT_OBJECTIVE
    objective = status.get("objective") if key == status.get("objective_key") else None
    if objective is None and key in df.columns:
        vals = df[key][np.isfinite(df[key])]
        objective = (vals.max() if mode == "max" else vals.min()) if len(vals) else None
    objective = None if objective is None else float(objective)
    if state == "completed" and (objective is None or not math.isfinite(objective)):
        notes.append(f"completed but no finite {key}")
    return RunRecord(
        path=run_dir,
        overrides=overrides,
        arm=arm,
        seed=_maybe_int(seed),
        status=str(state),
        reason=status.get("reason"),
        objective_key=key,
        objective=objective,
        final=final,
        best=best,
        metrics=df,
        notes=notes,
        config=config,
        status_data=status,
    )


def _maybe_int(x: str | None) -> int | str | None:
    try:
        return int(x) if x is not None else None
    except ValueError:
        return x


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Run dirs of a sweep: sub-directories (any depth <= 2) that contain ``.hydra/``, in natural order."""
    sweep_dir = Path(sweep_dir)
    found = [p.parent for p in sweep_dir.glob("*/.hydra")] + [p.parent for p in sweep_dir.glob("*/*/.hydra")]
    found = [p for p in found if p.is_dir()]

    def natural(p: Path):
        rel = p.relative_to(sweep_dir).parts
        return [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in rel]

    return sorted(set(found), key=natural)


def load_sweep(sweep_dir: str | Path, objective_key: str | None = None, mode: str = "min") -> list[RunRecord]:
    """All runs of a sweep dir. Raises FileNotFoundError naming the dir when it holds no run dirs."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir not found: {sweep_dir}")
    run_dirs = find_run_dirs(sweep_dir)
    if not run_dirs:
        raise FileNotFoundError(
            f"no runs in sweep dir {sweep_dir}: expected sub-directories containing .hydra/ "
            "(Hydra multirun layout <sweep_dir>/<job_num>/.hydra)"
        )
    return [load_run(d, objective_key, mode) for d in run_dirs]


def run_interval(record: RunRecord, key: str, mode: str | None = None) -> dict[str, float] | None:
    """{value, se, ci_lo, ci_hi} of the evaluation that gave the run's best ``key`` (metrics.csv, else
    eval/summary.json), None when the run logged no interval for it."""
    mode = mode or metric_direction(key) or "min"
    bounds = interval_keys(key)
    df = record.metrics
    if key in df.columns and bounds["se"] in df.columns:
        rows = df[df[key].notna() & df[bounds["se"]].notna()]
        if len(rows):
            row = rows.loc[rows[key].astype(float).idxmax() if mode == "max" else rows[key].astype(float).idxmin()]
            return {"value": float(row[key])} | {b: float(row[k]) for b, k in bounds.items() if k in row}
    best = (eval_summary(record).get("best") or {}).get(key) or {}
    if isinstance(best, dict) and best.get("se") is not None and best.get("value") is not None:
        return {"value": float(best["value"])} | {b: float(best[b]) for b in bounds if best.get(b) is not None}
    return None


def eval_summary(record: RunRecord) -> dict:
    path = RunDir(record.path).eval_summary
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
