"""The README's way to print resolved Hydra values of a sweep (`--cfg all --resolve -p hydra...`) works, and the
form it warns about (`--cfg hydra --resolve`) fails the way it says."""

from __future__ import annotations

import os
import subprocess
import sys


def _train(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "neuromf.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)


def test_resolved_sweep_dir_through_cfg_all():
    ok = _train("sweep=demo", "--cfg", "all", "--resolve", "-p", "hydra.sweep.dir")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().startswith("outputs/sweeps/demo/")
    bad = _train("sweep=demo", "--cfg", "hydra", "--resolve", "-p", "hydra.sweep.dir")
    assert bad.returncode != 0 and "Interpolation key 'sweep_name' not found" in bad.stderr
