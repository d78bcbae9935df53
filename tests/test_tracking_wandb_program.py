"""The W&B run records the training entry point as its program, also when a launcher's module is __main__."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
from neuromf.tracking.wandb_setup import make_wandb_logger
cfg = OmegaConf.create({"sweep_name": "s", "logger": {"wandb": {"project": "p", "entity": None, "mode": "offline"}}})
run = make_wandb_logger(cfg, Path(sys.argv[1]), "prog01").experiment
run.finish()
"""


def test_program_is_the_training_entry_point_under_a_launcher(tmp_path):
    # a script named like submitit's job entry point (`python -m submitit.core._submit`): what W&B saw before
    script = tmp_path / "_submit.py"
    script.write_text(JOB)
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    subprocess.run([sys.executable, str(script), str(tmp_path / "run")], check=True, env=env, timeout=1800)
    leet = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(leet), "leet", "inspect", "--json", str(tmp_path / "run" / "wandb")],
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    programs = set()
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        stack = [record]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                programs |= {v for k, v in item.items() if k == "program" and isinstance(v, str)}
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    assert programs == {"-m neuromf.train"}
