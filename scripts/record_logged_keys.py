"""Record what the runs of a finished sweep logged, as test data for the dashboards' key check.

    python scripts/record_logged_keys.py <sweep dir> tests/data/demo_sweep_logged

Per run dir: `.hydra/{config,overrides}.yaml` and `logged_keys.json` = the metrics.csv columns (step and epoch left
out) + the W&B image keys of the sample previews (`samples/nfe_<N>` for each NFE the run saved under samples/).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path


def logged_keys(run: Path) -> list[str]:
    with (run / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    keys = {k for k in header if k not in ("step", "epoch")}
    keys |= {f"samples/{p.name}" for p in run.glob("samples/epoch_*/nfe_*") if p.is_dir()}
    return sorted(keys)


def main(sweep: Path, out: Path) -> None:
    for run in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        dst = out / run.name
        (dst / ".hydra").mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "overrides.yaml"):
            shutil.copy(run / ".hydra" / name, dst / ".hydra" / name)
        (dst / "logged_keys.json").write_text(json.dumps(logged_keys(run), indent=0) + "\n")
        print(f"{run} -> {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
