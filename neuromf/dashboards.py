"""W&B dashboards as code: a monitoring Workspace and an ablation-comparison Report (``wandb_workspaces``).

Usage::

    python -m neuromf.dashboards build --entity E --project P [--sweep NAME | --sweep-dir DIR] [--out DIR | --refresh]
    python -m neuromf.dashboards push  --entity E --project P [--sweep NAME | --sweep-dir DIR]  # needs WANDB_API_KEY

For a sweep, runs are grouped by W&B group (the sweep and its launch) and the config keys the sweep varies,
resolved (``v_head`` -> ``model.use_v_head``); the runs table is sorted by the objective (its plain summary key:
the best value over validations); panels exist only for keys its composed configs log (``neuromf.tracking.keys``)
and are smoothed. An Optuna search (continuous parameters) is not grouped by its parameters: it gets parameter
importances and the objective against each parameter instead.

``build`` works offline and writes the JSON view models (stable ids, sorted keys) to ``--out`` (default
``build/dashboards``); ``--refresh`` rewrites the tracked ``dashboards/`` files, so that changes to the dashboards
are reviewed as git diffs. ``push`` saves the same objects to W&B; the workspace is one view per project and group
(a stable view name), updated in place by the next ``push``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import os
import random
import re
import sys
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from neuromf.config_compose import compose
from neuromf.evaluation.registry import DEFAULT_OBJECTIVE, LEGACY_ALIASES, direction_word
from neuromf.io_atomic import write_text_atomic
from neuromf.meanflow.contract import JVP_PARTS
from neuromf.meanflow.registry import all_diagnostics, all_terms
from neuromf.run_dir import RunDir
from neuromf.tracking.keys import STEP_KEY, all_expected, metric_base
from neuromf.tracking.metrics import is_replicate_key
from neuromf.tracking.run import flat_config

# Fallback arm keys when no sweep is given (Hydra config paths, logged as a nested W&B config).
ARM_KEYS = ("model.prediction_type", "model.conditioning", "loss.norm_p", "optim.lr")
DEFAULT_NFE = (1, 2, 5)
X_AXIS = STEP_KEY
TRACKED_DIR = Path(__file__).resolve().parent.parent / "dashboards"  # the reviewed files: `build --refresh`
DEFAULT_OUT = Path("build/dashboards")
SMOOTHING = 0.6  # exponential moving average of the line plots (W&B's slider; the raw line is shown too)
DERIVED_KEYS = ("tag",)  # run-dir name parts interpolated from other keys: never an arm key of their own

# (section, [(panel title, candidate keys)]): a panel keeps the candidates the sweep's configs will log. The loss
# terms and diagnostics are every objective's (neuromf/meanflow/contract.py): each arm logs its objective's own.
_TERMS = all_terms()
_OBJECTIVE_DIAGNOSTICS = [k for k in all_diagnostics() if k not in ("jvp_norm", *JVP_PARTS, "cos_V_v", "cos_vhat_v")]
_TITLES = {"fm_fraction": "flow-matching fraction", "alpha": "AlphaFlow alpha", "fm_share": "r = t share (schedule)",
           "gap_gamma": "gap-weight exponent (schedule)"}  # fmt: skip
SECTIONS: dict[str, list[tuple[str, list[str]]]] = {
    "losses": [
        *((f"loss term: {term}", [f"train/{term}"]) for term in _TERMS),
        ("optimised loss (the sum of the arm's terms)", ["train/loss", "train/loss_raw"]),
        ("loss_u on flow-matching / MeanFlow pairs", ["train/loss_u_fm", "train/loss_u_mf"]),
        ("validation loss terms", [f"val/{term}" for term in _TERMS]),
        ("validation loss (sum of the arm's terms)", ["val/loss_raw"]),
    ],
    "JVP": [
        ("JVP norm", ["train/jvp_norm", *(f"train/{k}" for k in JVP_PARTS)]),
        ("cosines", ["train/cos_V_v", "train/cos_vhat_v"]),
    ],
    "objective schedules": [
        (_TITLES.get(key, key), [f"train/{key}"]) for key in _OBJECTIVE_DIAGNOSTICS if not key.startswith("loss_u_")
    ],
    "throughput / memory": [
        ("samples/s", ["train/samples_per_s"]),
        ("peak GPU memory (GB)", ["train/peak_mem_gb"]),
        ("learning rate", ["lr-AdamW"]),
        ("evaluation time (s)", ["val/eval_time_s"]),
    ],
}


def sample_keys(nfe: tuple[int, ...] = DEFAULT_NFE) -> list[str]:
    """W&B image keys of the sample previews, one per number of function evaluations."""
    return [f"samples/nfe_{n}" for n in nfe]


def group_filter(group: str | None, sweep_name: str | None = None) -> str:
    """Runset filter: one W&B group (a sweep's launch, ``sweep/launch``), else every launch of a sweep (its
    ``sweep_name`` config key); empty = all runs."""
    if group:
        return f"Metric('Group') == {json.dumps(group)}"
    return f"Config('sweep_name') == {json.dumps(sweep_name)}" if sweep_name else ""


def _line(title: str, keys: list[str]) -> wr.LinePlot:
    return wr.LinePlot(
        title=title,
        x=X_AXIS,
        y=keys,
        groupby_aggfunc="mean",
        groupby_rangefunc="stddev",
        smoothing_factor=SMOOTHING,
        smoothing_type="exponential",
        smoothing_show_original=True,
    )


# ------------------------------------------------------------------------------------ sweep configs
def _choices(spec: str) -> list[str] | None:
    """Values of a sweeper parameter: 'a,b' or 'choice(a, b)'; None for ranges / intervals (Optuna)."""
    spec = str(spec).strip()
    if spec.startswith("choice(") and spec.endswith(")"):
        spec = spec[len("choice(") : -1]
    elif "(" in spec:
        return None
    return [v.strip() for v in spec.split(",")]


def sweep_configs(sweep: str, overrides: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """Resolved configs of every grid point of ``conf/sweep/<sweep>.yaml`` (one per arm, first value of the
    other parameters), and the sweeper's continuous parameters (Optuna ranges), which vary as they are."""
    base = [f"sweep={sweep}", *overrides]
    params = compose(base)["_sweep_params"]
    grid = {k: _choices(v) for k, v in params.items()}
    continuous = [k for k, v in grid.items() if v is None]
    grid = {k: v for k, v in grid.items() if v is not None and not is_replicate_key(k)}
    configs = [
        compose([*base, *(f"{k}={v}" for k, v in zip(grid, vals))]) for vals in itertools.product(*grid.values())
    ]
    return configs or [compose(base)], continuous


def run_configs(sweep_dir: Path) -> list[dict]:
    """Resolved configs of the runs of a sweep dir (``<run>/.hydra/config.yaml``)."""
    from neuromf.tracking.metrics import find_run_dirs, read_config

    configs = [read_config(d) for d in find_run_dirs(sweep_dir)]
    if not configs:
        raise RuntimeError(f"no runs in sweep dir {sweep_dir}")
    return configs


def varying_keys(configs: list[dict]) -> list[str]:
    """Dotted config keys whose resolved value differs between the configs (replicate keys left out)."""
    flats = [flat_config({k: v for k, v in c.items() if not k.startswith("_")}) for c in configs]
    keys = sorted({k for f in flats for k in f})
    return [
        k
        for k in keys
        if not is_replicate_key(k)
        and k not in DERIVED_KEYS
        and len({json.dumps(f.get(k), default=str, sort_keys=True) for f in flats}) > 1
    ]


def sweep_plan(sweep: str | None = None, sweep_dir: Path | None = None, overrides=()) -> dict:
    """Arm keys (resolved), logged keys, NFEs, objective and group of a sweep (by name or from its run dirs);
    the defaults of ``conf/train.yaml`` when neither is given."""
    if sweep_dir is not None:
        configs, continuous = run_configs(Path(sweep_dir)), []
    elif sweep is not None:
        configs, continuous = sweep_configs(sweep, tuple(overrides))
    else:
        configs, continuous = [compose(list(overrides))], []
    arm_keys = list(dict.fromkeys([*varying_keys(configs), *continuous]))
    keys = all_expected(configs)
    sweep_name = configs[0].get("sweep_name")
    nfe = sorted({int(k.split("_")[-1]) for k in keys if k.startswith("samples/nfe_")})
    first = configs[0]
    return {
        "arm_keys": tuple(arm_keys),
        "keys": keys,
        "nfe": tuple(nfe),
        "objective": first.get("objective", DEFAULT_OBJECTIVE),
        "objective_mode": first.get("objective_mode", "min"),
        "sweep_name": sweep_name,
        "group": launch_group(Path(sweep_dir), sweep_name) if sweep_dir is not None else None,
        "continuous": tuple(continuous),
    }


def launch_group(sweep_dir: Path, sweep_name: str | None) -> str:
    """The W&B group of a launched sweep's runs (``neuromf.tracking.wandb_setup.run_group``): its sweep name, the
    preset of its first run (``.hydra/hydra.yaml``) and the sweep dir's name (the launch)."""
    import yaml

    from neuromf.tracking.metrics import find_run_dirs
    from neuromf.tracking.wandb_setup import run_group

    experiment = None
    for run in find_run_dirs(sweep_dir)[:1]:
        try:
            hydra = yaml.safe_load(RunDir(run).hydra_settings.read_text()) or {}
            experiment = (((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}).get("experiment")
        except (OSError, yaml.YAMLError, AttributeError):
            experiment = None
    return run_group(sweep_name or "adhoc", None if experiment in (None, "null") else experiment, sweep_dir.name)


# ---------------------------------------------------------------------------------------- dashboards
def _eval_panels(keys: set[str]) -> list:
    """One line plot per evaluation metric (its step counts together) and one bar per reference level set."""
    bases = sorted({metric_base(k) for k in keys if re.match(r"^val/[^/]+/nfe\d+$", k)})
    panels = []
    for m in bases:
        ys = [k for k in keys if re.match(rf"^val/{re.escape(m)}/nfe\d+$", k)]  # values, not their intervals
        ys = sorted(ys, key=lambda k: int(k.rsplit("nfe", 1)[1]))
        panels.append(_line(f"{m} by step count ({direction_word(ys[0])})", ys))
    return panels


def _ref_panels(keys: set[str]) -> list:
    bases = sorted({metric_base(k) for k in keys if k.startswith("ref/")})
    return [
        wr.BarPlot(
            title=f"{m}: real floor / collapsed / noise ceiling",
            metrics=[k for k in (f"ref/{m}/real", f"ref/{m}/collapsed", f"ref/{m}/noise") if k in keys],
        )
        for m in bases
    ]


def monitoring_workspace(
    entity: str,
    project: str,
    group: str | None = None,
    arm_keys=ARM_KEYS,
    nfe=DEFAULT_NFE,
    keys=None,
    objective=DEFAULT_OBJECTIVE,
    objective_mode="min",
    sweep_name=None,
    continuous=(),
) -> ws.Workspace:
    """Workspace with losses / JVP / throughput / eval / reference / samples / configs sections (panels only for
    ``keys``, the keys the sweep's configs log; smoothed), runs grouped by group and the arm keys (not by the
    continuous parameters of an Optuna search, which get an "Optuna" section instead), x axis
    trainer/global_step; the runs table pins the objective's plain summary key (its best value over validations)
    and is sorted by it (best first)."""
    keys = set(keys) if keys is not None else all_expected([compose([])])
    grouping = [k for k in arm_keys if k not in continuous]
    sections = []
    if continuous:
        sections.append(ws.Section(name="Optuna", panels=_optuna_panels(objective, continuous), is_open=True))
    for name, plots in SECTIONS.items():
        panels = [_line(t, [k for k in ks if k in keys]) for t, ks in plots if any(k in keys for k in ks)]
        if name == "losses" and any(k.startswith("train/loss_ch") for k in keys):
            per_channel = wr.LinePlot(title="per-channel loss", x=X_AXIS, metric_regex="train/loss_ch.*")
            per_channel.smoothing_factor, per_channel.smoothing_type = SMOOTHING, "exponential"
            panels.append(per_channel)
        if panels:
            sections.append(ws.Section(name=name, panels=panels, is_open=name == "losses"))
    if any(k.startswith("val/") and "/nfe" in k for k in keys):
        extra = [_line("NFE consistency", ["val/nfe_consistency"])] if "val/nfe_consistency" in keys else []
        aliases = [f"val/{m}" for m in LEGACY_ALIASES if f"val/{m}" in keys]
        extra += [_line("first step count (older names)", aliases)] if aliases else []
        sections.append(ws.Section(name="eval", panels=_eval_panels(keys) + extra, is_open=True))
    if any(k.startswith("ref/") for k in keys):
        sections.append(ws.Section(name="reference levels", panels=_ref_panels(keys), is_open=False))
    media = [k for k in sample_keys(nfe) if k in keys]
    if media:
        sections.append(
            ws.Section(
                name="samples",
                is_open=True,
                panels=[wr.MediaBrowser(title=k, media_keys=[k], num_columns=4, gallery_axis="step") for k in media],
            )
        )
    sections.append(ws.Section(name="configs", panels=[wr.RunComparer(diff_only="split")], is_open=False))
    label = group or sweep_name
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"NeuroMF monitor{f' - {label}' if label else ''}",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=X_AXIS, max_runs=50),  # smoothing: per panel (_line)
        runset_settings=ws.RunsetSettings(
            filters=group_filter(group, sweep_name),
            groupby=[ws.Metric("Group"), *[ws.Config(k) for k in grouping]],
            order=[ws.Ordering(ws.Summary(objective), ascending=objective_mode != "max")],
            pinned_columns=["summary:" + objective, *[f"config:{_cfg_col(k)}" for k in arm_keys]],
        ),
    )


def _optuna_panels(objective: str, params) -> list:
    """An Optuna search: W&B's parameter importances for the objective and the objective against each parameter
    (one point per trial: its best value over validations)."""
    panels = [wr.ParameterImportancePlot(with_respect_to=objective)]
    for k in params:
        panels.append(wr.ScatterPlot(title=f"{objective} vs {k}", x=wr.Config(k), y=wr.SummaryMetric(objective)))
    return panels


def _cfg_col(key: str) -> str:
    """Runs-table column accessor of a nested config key: ``a.b`` -> ``a.value.b``."""
    first, *rest = key.split(".")
    return ".".join([first, "value", *rest])


def ablation_report(
    entity: str,
    project: str,
    group: str | None = None,
    arm_keys=ARM_KEYS,
    keys=None,
    objective=DEFAULT_OBJECTIVE,
    nfe=DEFAULT_NFE,
    objective_mode="min",
    sweep_name=None,
    continuous=(),
) -> wr.Report:
    """Report template comparing ablation arms: runs of ``group`` grouped by the arm config keys; panels for
    the objective (its best-over-validations summary, as ``neuromf.report`` ranks), the per-term losses and the
    evaluation metrics the sweep logs."""
    keys = set(keys) if keys is not None else all_expected([compose([])])
    best = objective  # its plain summary key: the best value over validations (ObjectiveSummary)
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=group or sweep_name or "all runs",
        filters=group_filter(group, sweep_name),
        groupby=[f"config.{k}" for k in arm_keys if k not in continuous],
        order=[wr.OrderBy(wr.SummaryMetric(objective), ascending=objective_mode != "max")],
    )
    panels = [
        wr.BarPlot(
            title=f"{best} per arm (best over validations per run; mean ± std)",
            metrics=[best],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
            layout=wr.Layout(x=0, y=0, w=12, h=8),
        ),
        wr.ParallelCoordinatesPlot(
            title="arms vs objective",
            layout=wr.Layout(x=12, y=0, w=12, h=8),
            columns=[
                *[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in arm_keys],
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(best)),
            ],
        ),
    ]
    terms = [f"{split}/{term}" for split in ("train", "val") for term in _TERMS]
    lines = [_line(k, [k]) for k in terms if k in keys]
    lines += [_line(objective, [objective])] if objective in keys else []
    lines += _eval_panels(keys) + _ref_panels(keys)
    lines += _optuna_panels(objective, continuous) if continuous else []
    for i, p in enumerate(lines):
        p.layout = wr.Layout(x=12 * (i % 2), y=8 + 6 * (i // 2), w=12, h=6)
    below = 8 + 6 * ((len(lines) + 1) // 2)
    lines.append(wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=below, w=24, h=10)))
    media = [k for k in sample_keys(nfe) if k in keys]
    label = group or sweep_name
    return wr.Report(
        entity=entity,
        project=project,
        title=f"NeuroMF ablation: {label or 'all runs'}",
        description="Ablation arms (grouped by their resolved config keys) compared per loss term and metric.",
        blocks=[
            wr.H1(text="Ablation arms"),
            wr.P(
                text=f"Runs of W&B group '{group}'."
                if group
                else f"Runs of sweep '{sweep_name}' (every launch)."
                if sweep_name
                else "All runs of the project."
            ),
            wr.P(
                text=f"Arms: {', '.join(arm_keys) or '(none)'}. Objective: {objective}, per run its best value over "
                f"validations (W&B summary {best}, as the offline report ranks; runs sorted by it). Offline statistics "
                "(Student t CIs, paired tests, Holm): python -m neuromf.report <sweep_dir>."
            ),
            wr.PanelGrid(runsets=[runset], panels=panels + lines),
            wr.H2(text="Samples"),
            wr.PanelGrid(
                runsets=[copy.deepcopy(runset)],
                panels=[wr.MediaBrowser(title="samples", media_keys=media, num_columns=4)] if media else [],
            ),
        ],
    )


def to_json(obj) -> str:
    """Offline JSON of a Workspace / Report view model, sorted keys. Report runsets are serialised without
    entity/project (their ``_to_model`` looks the project id up online); the report's own project is kept."""
    if isinstance(obj, wr.Report):
        obj = copy.deepcopy(obj)
        for block in obj.blocks:
            for rs in getattr(block, "runsets", []):
                rs.entity, rs.project = "", ""
    data = json.loads(obj._to_model().model_dump_json(by_alias=True, exclude_none=True))
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def build(entity: str, project: str, group: str | None, out: Path, plan: dict | None = None) -> list[Path]:
    """Build both objects for ``plan`` (``sweep_plan``) and write ``workspace_monitor.json`` and
    ``report_ablation.json`` atomically."""
    plan = plan or sweep_plan()
    objs = _objects(entity, project, group, plan)
    state = random.getstate()
    random.seed(0)  # wandb_workspaces draws panel / runset ids from `random`: fixed ids give stable diffs
    try:
        texts = {name: to_json(o()) for name, o in objs.items()}
    finally:
        random.setstate(state)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        paths.append(write_text_atomic(out / name, text))
    return paths


def _objects(entity, project, group, plan) -> dict:
    kw = {k: plan.get(k) for k in ("keys", "objective", "objective_mode", "nfe", "arm_keys", "sweep_name")}
    kw["continuous"] = tuple(plan.get("continuous") or ())
    return {
        "workspace_monitor.json": lambda: monitoring_workspace(entity, project, group, **kw),
        "report_ablation.json": lambda: ablation_report(entity, project, group, **kw),
    }


def view_name(entity: str, project: str, label: str | None) -> str:
    """The workspace's stable internal view name for a project and group / sweep (W&B's ``nw-<id>-v`` form), so
    that ``push`` updates that one view instead of adding a new one each time."""
    digest = hashlib.sha256(json.dumps([entity, project, label]).encode()).hexdigest()[:11]
    return f"nw-neuromf{digest}-v"


def push(
    entity: str, project: str, group: str | None, plan: dict | None = None, report_url: str | None = None
) -> list[str]:
    """Save both objects to W&B (network + WANDB_API_KEY required); returns their URLs. The workspace goes to its
    stable view (``view_name``), updated in place; the report updates ``report_url`` when given, else is new."""
    if not os.environ.get("WANDB_API_KEY"):
        raise RuntimeError(
            "push needs W&B credentials: set WANDB_API_KEY (and network access); "
            "use `build` to write the dashboards offline"
        )
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise RuntimeError(f"push needs network access but WANDB_MODE={os.environ['WANDB_MODE']}")
    plan = plan or sweep_plan()
    objs = _objects(entity, project, group, plan)
    workspace = objs["workspace_monitor.json"]()
    workspace._internal_name = view_name(entity, project, group or plan.get("sweep_name"))
    report = objs["report_ablation.json"]()
    if report_url:
        old = wr.Report.from_url(report_url)
        old.title, old.description, old.blocks = report.title, report.description, report.blocks
        report = old
    return [workspace.save().url, report.save().url]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromf.dashboards", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["build", "push"])
    p.add_argument("--entity", required=True)
    p.add_argument("--project", required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sweep", default=None, help="sweep config name (conf/sweep/<name>.yaml): arms composed")
    src.add_argument("--sweep-dir", type=Path, default=None, help="a launched sweep dir: its runs' configs")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override of the sweep's runs")
    p.add_argument("--group", default=None, help="W&B group to filter on (default: the sweep's sweep_name)")
    p.add_argument("--arm-key", action="append", default=None, help="group by these config keys instead")
    dest = p.add_mutually_exclusive_group()
    dest.add_argument("--out", type=Path, default=None, help=f"build: output dir (default: {DEFAULT_OUT}/)")
    dest.add_argument("--refresh", action="store_true", help="build: rewrite the tracked dashboards/ files")
    p.add_argument("--report-url", default=None, help="push: update this W&B report instead of saving a new one")
    args = p.parse_args(argv)
    out = TRACKED_DIR if args.refresh else args.out or DEFAULT_OUT
    try:
        plan = sweep_plan(args.sweep, args.sweep_dir, args.override)
        if args.arm_key:
            plan["arm_keys"] = tuple(args.arm_key)
        elif not plan["arm_keys"] and not (args.sweep or args.sweep_dir):
            plan["arm_keys"] = ARM_KEYS
        group = args.group or plan["group"]
        if not (args.sweep or args.sweep_dir):
            plan["sweep_name"] = None  # the defaults' sweep_name (adhoc) is no filter: all runs
        if args.command == "build":
            for path in build(args.entity, args.project, group, out, plan):
                print(f"wrote {path}")
        else:
            for url in push(args.entity, args.project, group, plan, args.report_url):
                print(f"saved {url}")
    except (RuntimeError, OSError, ValueError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def one_line(exc: BaseException) -> str:
    """An exception as one line: Hydra's multi-line messages folded, its config search path left out."""
    text = str(exc).split("Config search path:")[0]
    out = ""
    for raw in text.splitlines():
        part = raw.strip()
        if not part:
            continue
        sep = ", " if raw.startswith("\t") and out and not out.endswith(":") else " "
        out = f"{out}{sep}{part}" if out else part
    return out or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
