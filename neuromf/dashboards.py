"""W&B dashboards as code: a monitoring Workspace and an ablation-comparison Report (``wandb_workspaces``).

Usage::

    python -m neuromf.dashboards build --entity E --project P [--group G] [--out dashboards/]
    python -m neuromf.dashboards push  --entity E --project P [--group G]      # needs WANDB_API_KEY

``build`` works offline and writes the JSON view models (stable ids, sorted keys) so that changes to the
dashboards can be reviewed as git diffs; ``push`` saves the same objects to W&B.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

# Config keys that define an ablation arm (Hydra config paths, logged as a nested W&B config).
ARM_KEYS = ("model.prediction_type", "model.conditioning", "loss.norm_p", "optim.lr")
DEFAULT_NFE = (1, 2, 4)
OBJECTIVE = "val/swd"

SECTIONS: dict[str, list[tuple[str, list[str]]]] = {
    "losses": [
        ("loss", ["train/loss", "train/loss_raw"]),
        ("loss terms", ["train/loss_u", "train/loss_v"]),
        ("validation loss", ["val/loss_raw"]),
    ],
    "JVP": [
        ("JVP norm", ["train/jvp_norm"]),
        ("cosines", ["train/cos_V_v", "train/cos_vhat_v"]),
        ("flow-matching fraction", ["train/fm_fraction"]),
    ],
    "throughput / memory": [
        ("samples/s", ["train/samples_per_s"]),
        ("peak GPU memory (GB)", ["train/peak_mem_gb"]),
        ("learning rate", ["lr-AdamW"]),
    ],
    "eval": [
        ("SWD", ["val/swd"]),
        ("2.5D FID", ["val/fid_mean", "val/fid_axial", "val/fid_coronal", "val/fid_sagittal"]),
        ("3D feature distance", ["val/feat3d_fd"]),
        ("NFE consistency", ["val/nfe_consistency"]),
    ],
}


def sample_keys(nfe: tuple[int, ...] = DEFAULT_NFE) -> list[str]:
    """W&B image keys of the sample previews, one per number of function evaluations."""
    return [f"samples/nfe_{n}" for n in nfe]


def group_filter(group: str | None) -> str:
    """Runset filter expression selecting one W&B group (= sweep name); empty = all runs."""
    return "" if not group else f"Metric('Group') == {json.dumps(group)}"


def _line(title: str, keys: list[str]) -> wr.LinePlot:
    return wr.LinePlot(title=title, x="Step", y=keys, groupby_aggfunc="mean", groupby_rangefunc="stddev")


def monitoring_workspace(
    entity: str, project: str, group: str | None = None, arm_keys=ARM_KEYS, nfe=DEFAULT_NFE
) -> ws.Workspace:
    """Workspace with losses / JVP / throughput / eval / samples sections, runs grouped by group and arm."""
    sections = []
    for name, plots in SECTIONS.items():
        panels = [_line(t, k) for t, k in plots]
        if name == "losses":
            panels.append(wr.LinePlot(title="per-channel loss", x="Step", metric_regex="train/loss_ch.*"))
        sections.append(ws.Section(name=name, panels=panels, is_open=name in ("losses", "eval")))
    sections.append(
        ws.Section(
            name="samples",
            is_open=True,
            panels=[
                wr.MediaBrowser(title=k, media_keys=[k], num_columns=4, gallery_axis="step") for k in sample_keys(nfe)
            ],
        )
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"NeuroMF monitor{f' - {group}' if group else ''}",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis="Step", max_runs=50),
        runset_settings=ws.RunsetSettings(
            filters=group_filter(group),
            groupby=[ws.Metric("Group"), *[ws.Config(k) for k in arm_keys]],
            pinned_columns=["summary:" + OBJECTIVE, *[f"config:{_cfg_col(k)}" for k in arm_keys]],
        ),
    )


def _cfg_col(key: str) -> str:
    """Runs-table column accessor of a nested config key: ``a.b`` -> ``a.value.b``."""
    first, *rest = key.split(".")
    return ".".join([first, "value", *rest])


def ablation_report(entity: str, project: str, group: str | None = None, arm_keys=ARM_KEYS) -> wr.Report:
    """Report template comparing ablation arms: runs of ``group`` grouped by the arm config keys."""
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=group or "all runs",
        filters=group_filter(group),
        groupby=[f"config.{k}" for k in arm_keys],
    )
    panels = [
        wr.BarPlot(
            title=f"{OBJECTIVE} per arm (mean ± std)",
            metrics=[OBJECTIVE],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
            layout=wr.Layout(x=0, y=0, w=12, h=8),
        ),
        wr.ParallelCoordinatesPlot(
            title="arms vs objective",
            layout=wr.Layout(x=12, y=0, w=12, h=8),
            columns=[
                *[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in arm_keys],
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(OBJECTIVE)),
            ],
        ),
        _line("train/loss_raw", ["train/loss_raw"]),
        _line("val/swd", ["val/swd"]),
        _line("2.5D FID", ["val/fid_mean"]),
        _line("3D feature distance", ["val/feat3d_fd"]),
    ]
    for i, p in enumerate(panels[2:]):
        p.layout = wr.Layout(x=12 * (i % 2), y=8 + 6 * (i // 2), w=12, h=6)
    return wr.Report(
        entity=entity,
        project=project,
        title=f"NeuroMF ablation: {group or 'all runs'}",
        description="Ablation arms (grouped by config) compared on the validation objective, mean ± std over seeds.",
        blocks=[
            wr.H1(text="Ablation arms"),
            wr.P(text=f"Runs of W&B group '{group}'." if group else "All runs of the project."),
            wr.P(
                text=f"Arms: {', '.join(arm_keys)}. Objective: {OBJECTIVE} (lower is better). "
                "Offline statistics with Welch tests: python -m neuromf.report <sweep_dir>."
            ),
            wr.PanelGrid(runsets=[runset], panels=panels),
            wr.H2(text="Samples"),
            wr.PanelGrid(
                runsets=[copy.deepcopy(runset)],
                panels=[wr.MediaBrowser(title="samples", media_keys=sample_keys(), num_columns=4)],
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


def build(entity: str, project: str, group: str | None, out: Path, arm_keys=ARM_KEYS, nfe=DEFAULT_NFE) -> list[Path]:
    """Build both objects and write ``workspace_monitor.json`` and ``report_ablation.json`` atomically."""
    state = random.getstate()
    random.seed(0)  # wandb_workspaces draws panel / runset ids from `random`: fixed ids give stable diffs
    try:
        objs = {
            "workspace_monitor.json": monitoring_workspace(entity, project, group, arm_keys, nfe),
            "report_ablation.json": ablation_report(entity, project, group, arm_keys),
        }
        texts = {name: to_json(o) for name, o in objs.items()}
    finally:
        random.setstate(state)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out / name)
        paths.append(out / name)
    return paths


def push(entity: str, project: str, group: str | None, arm_keys=ARM_KEYS, nfe=DEFAULT_NFE) -> list[str]:
    """Save both objects to W&B (network + WANDB_API_KEY required); returns their URLs."""
    if not os.environ.get("WANDB_API_KEY"):
        raise RuntimeError(
            "push needs W&B credentials: set WANDB_API_KEY (and network access); "
            "use `build` to write the dashboards offline"
        )
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise RuntimeError(f"push needs network access but WANDB_MODE={os.environ['WANDB_MODE']}")
    w = monitoring_workspace(entity, project, group, arm_keys, nfe).save()
    r = ablation_report(entity, project, group, arm_keys).save()
    return [w.url, r.url]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromf.dashboards", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["build", "push"])
    p.add_argument("--entity", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--group", default=None, help="W&B group (= sweep name) to filter on; default: all runs")
    p.add_argument("--arm-key", action="append", default=None, help=f"config key of an arm (default: {ARM_KEYS})")
    p.add_argument("--nfe", type=int, nargs="+", default=list(DEFAULT_NFE), help="NFEs of the sample panels")
    p.add_argument("--out", type=Path, default=Path("dashboards"), help="build: output dir (default: dashboards/)")
    args = p.parse_args(argv)
    arm_keys = tuple(args.arm_key) if args.arm_key else ARM_KEYS
    try:
        if args.command == "build":
            for path in build(args.entity, args.project, args.group, args.out, arm_keys, tuple(args.nfe)):
                print(f"wrote {path}")
        else:
            for url in push(args.entity, args.project, args.group, arm_keys, tuple(args.nfe)):
                print(f"saved {url}")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
