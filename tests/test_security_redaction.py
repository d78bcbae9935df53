"""No password reaches a shared file: URL passwords and secret-looking keys are masked (neuromf/tracking/redact.py)
in everything a run, a sweep or a report writes or logs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from neuromf.tracking.redact import (
    MASK,
    install_log_redaction,
    is_secret_key,
    redact,
    redact_file,
    redact_text,
    redacted_argv,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "hydra.sweeper.storage=postgresql://alice:PW@host/optuna",
            "hydra.sweeper.storage=postgresql://alice:***@host/optuna",
        ),
        (
            "+optuna.storage='postgresql+psycopg2://alice:PW@h:5432/db'",
            "+optuna.storage='postgresql+psycopg2://alice:***@h:5432/db'",
        ),
        (r"+notes.db=postgresql\://bob\:PW@h/x", r"+notes.db=postgresql\://bob\:***@h/x"),  # as Hydra escapes it
        ("redis://:PW@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://alice:p@ss@h/db", "postgresql://alice:***@h/db"),  # an unescaped '@' in the password
        ("mysql://u@h/db?password=PW&ssl=1", "mysql://u@h/db?password=***&ssl=1"),
        ("logger.wandb.api_key=PW seed=1", "logger.wandb.api_key='***' seed=1"),
        ("WANDB_API_KEY=PW", "WANDB_API_KEY='***'"),
        ("db:\n  password: PW\n  user: alice\n", "db:\n  password: '***'\n  user: alice\n"),
        ('{"hf_token": "PW", "n": 1}', '{"hf_token": "***", "n": 1}'),
        ("{'secret': 'PW'}", "{'secret': '***'}"),
        ("--password PW --n 4", "--password '***' --n 4"),
        ("--api-key=PW", "--api-key='***'"),
        # left alone: no password in the URL, a port, an interpolation, no secret, prose, a count
        ("postgresql://alice@host/optuna", "postgresql://alice@host/optuna"),
        ("http://host:8080/a?u=x@y", "http://host:8080/a?u=x@y"),
        ("db.password=${oc.env:DB_PASSWORD}", "db.password=${oc.env:DB_PASSWORD}"),
        ("password: null", "password: null"),
        ("the password is wrong", "the password is wrong"),
        ("password_min_length=3 max_tokens=5 val/loss_u: 0.3", "password_min_length=3 max_tokens=5 val/loss_u: 0.3"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


def test_redact_structures():
    cfg = {"db": {"password": "PW", "url": "postgresql://a:PW@h/d", "token": None}, "runs": [("s3://k:PW@b",)], "n": 3}
    assert redact(cfg) == {
        "db": {"password": MASK, "url": "postgresql://a:***@h/d", "token": None},
        "runs": [("s3://k:***@b",)],
        "n": 3,
    }
    assert redact(cfg, drop=True)["db"] == {"url": "postgresql://a:***@h/d"}
    assert [is_secret_key(k) for k in ("password", "db.password", "WANDB_API_KEY", "hf-token", "secrets")] == [True] * 5
    assert [is_secret_key(k) for k in ("tokenizer", "storage", "max_tokens", "keyframe", "password_len")] == [False] * 5


def test_redact_file_keeps_hydras_yaml_readable(tmp_path):
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("- +optuna.storage='postgresql://alice:PW@h/optuna'\n- logger.wandb.api_key=PW\n- seed=1\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "logger:\n  wandb:\n    api_key: PW\n    project: p\noptuna:\n  storage: postgresql://alice:PW@h/o\n"
    )
    assert redact_file(overrides) and redact_file(config) and not redact_file(config)  # then nothing left to mask
    assert yaml.safe_load(overrides.read_text()) == [
        "+optuna.storage='postgresql://alice:***@h/optuna'",
        "logger.wandb.api_key='***'",
        "seed=1",
    ]
    assert yaml.safe_load(config.read_text()) == {
        "logger": {"wandb": {"api_key": MASK, "project": "p"}},
        "optuna": {"storage": "postgresql://alice:***@h/o"},
    }
    assert not redact_file(tmp_path / "missing.yaml")


def test_log_records_are_redacted_whatever_the_handler(tmp_path):
    install_log_redaction()
    install_log_redaction()  # idempotent
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("neuromf.test_redaction")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("study %r in %s", "s", "postgresql://alice:PW@h/optuna")
        try:
            raise RuntimeError("cannot connect to postgresql://alice:PW@h/optuna")
        except RuntimeError:
            log.exception("failed with api_key=%s", "PW")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "PW" not in out
    assert "study 's' in postgresql://alice:***@h/optuna" in out and "failed with api_key='***'" in out
    assert "RuntimeError: cannot connect to postgresql://alice:***@h/optuna" in out  # the traceback as well


def test_redacted_argv_and_status_json(tmp_path, monkeypatch):
    from neuromf.tracking.run import provenance, update_status

    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "hydra.sweeper.storage=postgresql://a:PW@h/o", "x.token=PW"])
    with redacted_argv():
        assert sys.argv[2:] == ["hydra.sweeper.storage=postgresql://a:***@h/o", "x.token='***'"]
    assert sys.argv[2] == "hydra.sweeper.storage=postgresql://a:PW@h/o"  # restored: the job still needs it
    update_status(tmp_path, reason="OperationalError: postgresql://a:PW@h/o refused", provenance=provenance())
    text = (tmp_path / "status.json").read_text()
    assert "PW" not in text and "postgresql://a:***@h/o" in json.loads(text)["provenance"]["command"]


def test_report_masks_a_password_in_a_sweep_written_elsewhere(tmp_path, capsys):
    """A sweep dir written before redaction (or by hand): the report shows it masked, and does not try to open
    a study whose URL was masked."""
    from test_report_sweep import make_run

    from neuromf.report import optuna_storage, sweep_command

    sd = tmp_path / "sweep"
    make_run(sd / "0", "u", 0, 0.1)
    ov = {"hydra": ["hydra.sweeper.storage=postgresql://alice:PW@h/optuna"], "task": ["+db.password=PW", "seed=0"]}
    (sd / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": ov}}))
    assert sweep_command(sd) == (
        "python -m neuromf.train -m hydra.sweeper.storage=postgresql://alice:***@h/optuna +db.password='***' seed=0"
    )
    sweeper = {"storage": "postgresql://alice:***@h/optuna", "study_name": "s"}
    (sd / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    assert optuna_storage(sd) is None
    assert "the study's storage URL postgresql://alice:***@h/optuna has its password masked" in capsys.readouterr().err


def test_progress_lines_are_redacted(tmp_path):
    from neuromf.sweep.progress import progress_lines

    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- +optuna.storage=postgresql://a:PW@h/o\n- optim.lr=0.1\n")
    (run / "progress.json").write_text(json.dumps({"state": "training", "step": 2, "total_steps": 4, "eta_s": 5}))
    assert progress_lines(tmp_path) == {"0": "[arm 0: +optuna.storage=postgresql://a:***@h/o optim.lr=0.1] training "
                                              "step 2/4  5s left"}  # fmt: skip


# ------------------------------------------------------------------------ a real sweep and its report
PLANTED_PASSWORD = "PlantedDbPassw0rd"
PLANTED_KEY = "PlantedApiKey1234"


def _files_holding(root: Path, needles: tuple[str, ...]) -> list[str]:
    """Every file under `root` (text or binary, at any depth) whose bytes contain one of `needles`."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return found


@pytest.mark.slow
def test_a_planted_password_and_key_reach_no_file_of_a_sweep_or_its_report(postgres_url, tmp_path, demo_latents):
    """The issue's command: an Optuna sweep on a PostgreSQL study given with its password on the command line
    (the local server trusts any password), a secret-looking key, W&B offline; then the report. Neither string is
    in any file under the sweep dir, the report dir or the working dir; their masked forms are."""
    user, rest = postgres_url.split("://", 1)[1].split("@", 1)
    url = f"{postgres_url.split('://')[0]}://{user}:{PLANTED_PASSWORD}@{rest}"
    sweep = tmp_path / "sweep"
    name = f"redact_{os.getpid()}_{int(time.time())}"
    from training_helpers import TINY_TRAIN

    args = [
        "sweep=lr_optuna", f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.baselines=null",
        "hydra/launcher=basic", *[o for o in TINY_TRAIN if not o.startswith("logger=")], "logger=wandb",
        f"+logger.wandb.api_key={PLANTED_KEY}", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "neuromf.train", "-m", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = sweep / "0"
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))  # W&B wrote its run (config, summary, metadata)
    report = subprocess.run([sys.executable, "-m", "neuromf.report", str(sweep), "--no-real"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert report.returncode == 0, report.stderr[-4000:]
    assert (sweep / "report" / "report.html").is_file()

    needles = (PLANTED_PASSWORD, PLANTED_KEY)
    assert _files_holding(tmp_path, needles) == []
    for out in (proc.stdout, proc.stderr, report.stdout, report.stderr):
        assert not any(n in out for n in needles)
    masked = f"{user}:{MASK}@"
    assert masked in (run / ".hydra" / "overrides.yaml").read_text()  # the job's own +optuna.storage
    assert masked in (run / ".hydra" / "hydra.yaml").read_text()
    assert masked in json.loads((run / "status.json").read_text())["provenance"]["command"]
    assert "api_key='***'" in json.loads((run / "status.json").read_text())["provenance"]["command"]
    assert masked in (sweep / "report" / "report.md").read_text()  # the shared config (optuna.storage) it shows
