"""The Optuna study of each sweep (trials, importances, plots, pruning savings)."""

from __future__ import annotations

import pandas as pd

from neuromf.report.core import optuna_section


def _saved_text(hours: float, kind: str | None) -> str:
    """The pruning saving in words: GPU-hours only when the pruned runs trained on GPUs."""
    est = "devices x wall time per step x steps not run"
    if kind == "GPU":
        return f" Pruning saved about {hours:.3g} GPU-hours ({est})."
    on = {"CPU": "CPU runs: no GPU time", "mixed": "GPU and CPU runs"}.get(kind or "", "accelerator not recorded")
    return f" Pruning saved about {hours:.3g} device-hours ({est}; {on})."


def _optuna_blocks(o: dict) -> list:
    best = o["best"]
    text = (
        f"Study `{o['study']}` ({o['storage']}), direction {o['direction']}; trials by state: "
        + ", ".join(f"{k} {v}" for k, v in o["states"].items())
        + (f". Best trial {best['trial']}: value {best['value']:.4g}, params {best['params']}." if best else ".")
        + (_saved_text(o["saved_device_h"], o.get("saved_on")) if o.get("saved_device_h") else "")
    )
    blocks = [("h2", f"Optuna study {o['study']}"), ("p", text), ("table", o["trials"], False)]
    if o.get("importances"):
        imp = pd.DataFrame({"importance": list(o["importances"].values())}, index=list(o["importances"]))
        imp.index.name = "parameter"
        blocks.append(("table", imp, True))
    blocks += [("p", n) for n in o["notes"]]
    blocks += [("img", name, p) for name, p in o["images"].items()]
    return blocks


def blocks(ctx) -> list:
    studies = [o for o in (optuna_section(sd, ctx.tmp) for sd in ctx.sweep_dirs) if o]
    ctx.extra["optuna"] = studies
    return [b for o in studies for b in _optuna_blocks(o)]
