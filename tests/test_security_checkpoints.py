"""Reading a sweep dir never runs code from it: every reader of the files of a run dir (report, sweep summary,
dashboards, progress lines, resume checks and Lightning's resume load, the sample CLI) is given a malicious pickle
(its __reduce__ creates a marker file) in each file it opens; the marker never appears and the file is named."""

from __future__ import annotations

import io
import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from test_report_sweep import make_run

from neuromf.tracking.safe_load import CHECKPOINT_GLOBALS, UnsafeCheckpointError, load_tensors_only
from neuromf.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointReadError,
    find_resume_checkpoint,
    validate_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling it runs `touch <marker>`: what a checkpoint planted in a shared sweep dir could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint (state_dict, global_step) carrying the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "global_step": 3, "epoch": 0, "x": Payload(marker)}, path)
    return path


def plant_pickle(path: Path, marker: Path) -> Path:
    """A plain pickle of the payload in place of any file (status.json, config.yaml, metrics.csv, ...)."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker)))
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "marker-created-by-the-payload"


def test_the_planted_checkpoint_does_run_code_when_unpickled(tmp_path, marker):
    """The planted file is really malicious: an unrestricted load runs it (what the readers must never do)."""
    torch.load(plant_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_load_tensors_only_refuses_the_payload_and_names_the_file(tmp_path, marker):
    evil = plant_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match=rf"^{evil}: unsafe checkpoint: holds posix\.system"):
        load_tensors_only(evil)
    with pytest.raises(UnsafeCheckpointError, match=rf"^{tmp_path / 'raw.pkl'}: unsafe checkpoint"):
        load_tensors_only(plant_pickle(tmp_path / "raw.pkl", marker))
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    with pytest.raises(UnsafeCheckpointError, match="text.ckpt: "):
        load_tensors_only(tmp_path / "text.ckpt")
    assert not marker.exists()


def test_resume_checks_and_lightnings_resume_load_refuse_a_planted_checkpoint(tmp_path, marker):
    ckpts = tmp_path / "run" / "checkpoints"
    for name in ("last.ckpt", "last.prev.ckpt", "best-000-000002.ckpt"):
        plant_checkpoint(ckpts / name, marker)
    with pytest.raises(CheckpointReadError, match=rf"{ckpts / 'last.ckpt'}: unsafe checkpoint"):
        validate_checkpoint(ckpts / "last.ckpt")
    found, problems = find_resume_checkpoint(ckpts)
    assert found is None and len(problems) == 3
    assert [p.split(": ")[0] for p in problems] == [str(ckpts / n) for n in ("last.ckpt", "last.prev.ckpt")] + [
        str(ckpts / "best-000-000002.ckpt")
    ]
    with pytest.raises(CheckpointReadError, match="last.ckpt: unsafe checkpoint"):
        AtomicCheckpointIO().load_checkpoint(ckpts / "last.ckpt")  # what trainer.fit(ckpt_path=...) calls
    assert not marker.exists()


def test_a_planted_last_ckpt_falls_back_to_a_readable_one_and_is_named(tmp_path, marker):
    ckpts = tmp_path / "checkpoints"
    plant_checkpoint(ckpts / "last.ckpt", marker)
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "global_step": 2, "epoch": 0}, ckpts / "last.prev.ckpt")
    found, problems = find_resume_checkpoint(ckpts)
    assert found["path"] == str(ckpts / "last.prev.ckpt") and found["global_step"] == 2
    assert problems == [f"{ckpts / 'last.ckpt'}: unsafe checkpoint: holds posix.system, which a weights-only load "
                        "refuses (not loaded)"]  # fmt: skip
    assert not marker.exists()


@pytest.mark.parametrize("where", ["ckpt_path", "run_dir"])
def test_train_cli_refuses_to_resume_from_a_planted_checkpoint_with_exit_2(tmp_path, marker, where):
    """ckpt_path=<planted file>, or a run dir whose only checkpoint is planted: one line naming it, exit 2."""
    run_dir = tmp_path / "run"
    evil = plant_checkpoint(tmp_path / "evil.ckpt" if where == "ckpt_path" else run_dir / "checkpoints" / "last.ckpt",
                            marker)  # fmt: skip
    extra = [f"ckpt_path={evil}"] if where == "ckpt_path" else []
    cmd = [sys.executable, "-m", "neuromf.train", f"hydra.run.dir={run_dir}", "logger=csv", "eval=none", *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f"{evil}: unsafe checkpoint: holds posix.system" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_sample_cli_refuses_a_planted_checkpoint(tmp_path, marker, capsys):
    from neuromf.sample import main as sample_main

    evil = plant_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    assert sample_main([str(evil), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {evil}: unsafe checkpoint"), err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ a shared sweep dir
def _sweep(tmp_path: Path) -> Path:
    """Two synthetic runs (tests/test_report_sweep.make_run) with every file the sweep readers open."""
    sd = tmp_path / "sweep"
    for job, pred in enumerate(["u", "x"]):
        run = sd / str(job)
        make_run(run, pred, 0, 0.1 + job)
        (run / "progress.json").write_text('{"state": "finished", "step": 6, "total_steps": 6, "loss_u": 1.0}')
        (run / "eval").mkdir()
        (run / "eval" / "summary.json").write_text('{"reference": {}, "history": []}')
        summary = run / "wandb" / "offline-run-20260101_000000-abc" / "files" / "wandb-summary.json"
        summary.parent.mkdir(parents=True)
        summary.write_text('{"_runtime": 12}')
        (run / "checkpoints").mkdir()
        torch.save({"state_dict": {"net.w": torch.zeros(3, 4)}, "global_step": 6}, run / "checkpoints" / "last.ckpt")
    (sd / "multirun.yaml").write_text("hydra:\n  overrides:\n    hydra: []\n    task: [seed=0]\n")
    return sd


# each file the sweep readers open -> what the report does with a pickle in its place: skip it with a warning
# naming it (exit 0), refuse the sweep with one error line naming it (exit 2: a run's config, overrides and metrics
# are what the report is built from), note it with the run (status.json), or not open it at all (progress.json is
# read for pruned runs only)
SWEEP_FILES = {
    "0/checkpoints/last.ckpt": "warning",
    "0/status.json": "note",
    "0/.hydra/config.yaml": "error",
    "0/.hydra/overrides.yaml": "error",
    "0/metrics.csv": "note",  # read as far as it parses; the cut-off part is named in the report
    "0/progress.json": "unused",
    "0/eval/summary.json": "warning",
    "0/wandb/offline-run-20260101_000000-abc/files/wandb-summary.json": "warning",
    "multirun.yaml": "warning",
}


def _run_report(sd: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "neuromf.report", str(sd), "--out", str(out), "--metric", "val/swd"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_report_runs_nothing_from_a_planted_checkpoint_and_names_it(tmp_path, marker, capsys):
    """The issue's case: the report used to unpickle checkpoints/*.ckpt unrestricted (marker created, exit 0)."""
    sd = _sweep(tmp_path)
    evil = plant_checkpoint(sd / "1" / "checkpoints" / "last.ckpt", marker)
    proc = _run_report(sd, tmp_path / "report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists()
    skipped = [ln for ln in proc.stderr.splitlines() if str(evil) in ln]
    assert skipped == [f"warning: skipped {evil}: unsafe checkpoint: holds posix.system, which a weights-only load "
                       "refuses (not loaded)"], proc.stderr[-3000:]  # fmt: skip
    assert (tmp_path / "report" / "report.html").is_file()
    from neuromf.report import parameter_count

    assert parameter_count(sd / "0") == 12  # the readable checkpoint next to it: net.w, 3 x 4
    assert parameter_count(sd / "1") is None and not marker.exists()


@pytest.mark.parametrize("planted", SWEEP_FILES)
def test_sweep_readers_run_nothing_from_any_planted_file(tmp_path, marker, planted, capsys):
    """A pickle in place of each file: the report (CLI), the sweep summary, the dashboards' config read and the
    progress lines run none of it; the report names the file (or does not open it)."""
    from neuromf.dashboards import run_configs
    from neuromf.sweep.progress import progress_lines
    from neuromf.sweep.summary import summarize_sweep

    sd = _sweep(tmp_path)
    path = sd / planted
    plant_checkpoint(path, marker) if planted.endswith(".ckpt") else plant_pickle(path, marker)
    from neuromf.report import main as report_main

    rc = report_main([str(sd), "--out", str(tmp_path / "report"), "--metric", "val/swd", "--no-real"])
    proc = subprocess.CompletedProcess([], rc, *capsys.readouterr())  # in-process: the same CLI, no start-up
    outcome = SWEEP_FILES[planted]
    assert proc.returncode == (2 if outcome == "error" else 0), proc.stderr[-3000:]
    if outcome == "error":
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}: "), proc.stderr[-3000:]
    elif outcome == "warning":
        warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"warning: skipped {path}: ")]
        assert len(warnings) == 1, proc.stderr[-3000:]
    elif outcome == "note":
        report = (tmp_path / "report" / "report.md").read_text()
        assert str(path) in report  # named in the report's notes, as a damaged file
    for reader in (summarize_sweep, run_configs, progress_lines):
        try:
            reader(sd)
        except ValueError as err:  # the sweep summary and dashboards refuse a run they cannot read
            assert str(err).startswith(f"{path}: "), err
    assert not marker.exists()


# ------------------------------------------------------------------ the project's own checkpoints
TENSOR_GLOBALS = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def pickle_globals(path: Path) -> set[str]:
    """Every global a torch checkpoint's pickle names (module.name), read with pickletools: nothing is loaded."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    names = set()
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        assert op.name != "STACK_GLOBAL", "torch.save writes protocol 2: globals are GLOBAL opcodes"
        if op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


@pytest.mark.slow
def test_the_checkpoints_a_run_writes_hold_exactly_the_allowed_types(tmp_path):
    """A tiny run with everything that adds checkpoint state (evaluation, best-k checkpoints, early stopping,
    EMA, samples): its checkpoints name tensors, storages and CHECKPOINT_GLOBALS only, load data-only, and the run
    resumes from them through the same loader."""
    from hydra import compose, initialize_config_dir
    from training_helpers import CONF, TINY

    from neuromf.train import train

    def cfg(*extra: str):
        with initialize_config_dir(config_dir=CONF, version_base=None):
            return compose(config_name="train", overrides=[*base, *extra])

    base = [o for o in TINY if not o.startswith(("eval=", "callbacks.samples"))] + [
        "eval.num_samples=4", "eval.nfe_list=[1]", "eval.feat3d_enabled=false", "eval.msssim_enabled=false",
        "eval.reference_levels=false", "eval.swd_projections=16", "eval.knn_k=1", f"eval.cache_dir={tmp_path / 'c'}",
        "callbacks.samples.nfe_list=[1]", "callbacks.samples.every_n_epochs=1", "callbacks.early_stopping.enabled=true",
        "objective=val/swd/nfe1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.batch_size=2",
        "torch_threads=1",
    ]  # fmt: skip
    run = tmp_path / "run"
    train(cfg("trainer.max_epochs=2"), run)
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in ckpts} >= {"last.ckpt", "last.prev.ckpt"} and any(p.name.startswith("best-") for p in ckpts)
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in CHECKPOINT_GLOBALS}
    for path in ckpts:
        names = pickle_globals(path)
        storages = {n for n in names if n.startswith("torch.") and n.endswith("Storage")}
        assert names - storages - TENSOR_GLOBALS == allowed, (path.name, names)
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        ckpt = load_tensors_only(path)
        assert ckpt["global_step"] > 0 and ckpt["callbacks"] and ckpt["hyper_parameters"]["model"]
    train(cfg("trainer.max_epochs=3"), run)  # resumes: Lightning loads last.ckpt data-only
    from neuromf.tracking.run import read_status

    status = read_status(run)
    assert status["status"] == "completed" and status["resumed_step"] == 4 and status["global_step"] == 6


def test_no_reader_in_the_project_unpickles_unrestricted():
    """No torch.load outside neuromf/tracking/safe_load.py without weights_only=True (grep of the package)."""
    offenders = []
    for path in (REPO / "neuromf").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
            if "weights_only=False" in line or "pickle.load" in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_sweep_the_tests_plant_into_has_every_file_the_readers_open(tmp_path):
    sd = _sweep(tmp_path)
    assert [f for f in SWEEP_FILES if not (sd / f).is_file()] == []
