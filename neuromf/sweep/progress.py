"""Hydra callback printing each arm's progress while a multirun trains (read from <run dir>/progress.json).

Runs in the launching process: a thread polls the sweep dir every `every_s` seconds and prints one line per arm
that changed (step/total, the objective's headline loss term, time left), so `python -m neuromf.train -m ...` is
not silent for minutes.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from neuromf.run_dir import RunDir
from neuromf.tracking.metrics import parse_override
from neuromf.tracking.redact import redact_text


def _fmt_time(seconds) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def swept_keys(config: DictConfig) -> set[str]:
    """The keys a multirun varies: its sweeper's params and the command line's sweep overrides (a,b / choice())."""
    keys = set((OmegaConf.select(config, "hydra.sweeper.params") or {}).keys())
    for ov in OmegaConf.select(config, "hydra.overrides.task") or []:
        key, value = parse_override(str(ov))
        if "," in value or "(" in value:
            keys.add(key)
    return keys


def progress_lines(
    sweep_dir: Path, arms: dict[str, str] | None = None, swept: set[str] | None = None
) -> dict[str, str]:
    """job name -> one progress line, for every run dir of `sweep_dir` that has a progress.json. Each job is
    labelled by its values of the `swept` keys (all its arm keys and seed), or, where they are not known, by the
    overrides it does not share with the other jobs that have started."""
    lines = {}
    paths = sorted(Path(sweep_dir).glob("*/progress.json"), key=lambda p: p.parent.name)
    if arms is None and swept:
        arms = {
            p.parent.name: " ".join(o for o in _overrides(p.parent) if parse_override(o)[0] in swept) for p in paths
        }
    if arms is None:  # label each arm by the overrides it does not share with every other arm
        overrides = {p.parent.name: _overrides(p.parent) for p in paths}
        shared = set.intersection(*map(set, overrides.values())) if len(overrides) > 1 else set()
        arms = {job: " ".join(o for o in ov if o not in shared) or " ".join(ov) for job, ov in overrides.items()}
    for path in paths:
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now: next poll
            continue
        job = path.parent.name
        label = arms.get(job, "")
        total = f"/{p['total_steps']}" if p.get("total_steps") else ""
        term = str(p.get("loss_term") or "loss_u")  # the objective's headline term (older runs: loss_u)
        loss = f"  {term} {p[term]:.3g}" if isinstance(p.get(term), (int, float)) else ""
        left = "done" if p["state"] == "finished" else f"{_fmt_time(p.get('eta_s'))} left"
        lines[job] = redact_text(f"[arm {job}: {label}] {p['state']} step {p['step']}{total}{loss}  {left}")
    return lines


def _overrides(run_dir: Path) -> list[str]:
    path = RunDir(run_dir).overrides
    if not path.exists():
        return []
    import yaml

    try:
        return [str(o) for o in yaml.safe_load(path.read_text()) or []]
    except (OSError, ValueError, TypeError, yaml.YAMLError):  # being written, or not a YAML list: no label
        return []


class SweepProgress(Callback):
    """Registered in conf/train.yaml under hydra.callbacks (`every_s`: poll interval; 0 switches it off)."""

    def __init__(self, every_s: float = 15.0, stream=None):
        self.every_s, self.stream = every_s, stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown: dict[str, str] = {}
        self._swept: set[str] = set()

    def __getstate__(self) -> dict:
        # submitit pickles Hydra's callbacks with each job: the thread and its event stay in the launcher
        return {"every_s": self.every_s, "stream": None, "_shown": {}, "_swept": set()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _stop=threading.Event(), _thread=None)

    def _poll(self, sweep_dir: Path) -> None:
        out = self.stream or sys.stdout
        for job, line in progress_lines(sweep_dir, swept=self._swept).items():
            if self._shown.get(job) != line:
                print(line, file=out, flush=True)
                self._shown[job] = line

    def _loop(self, sweep_dir: Path) -> None:
        while not self._stop.wait(self.every_s):
            self._poll(sweep_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if self.every_s <= 0:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        self._swept = swept_keys(config)  # labels name every swept key, even while only one arm's jobs run
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(sweep_dir,), daemon=True, name="sweep-progress")
        self._thread.start()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._poll(Path(config.hydra.sweep.dir))
            self._thread = None
