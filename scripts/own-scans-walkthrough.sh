#!/usr/bin/env bash
# own-scans-walkthrough.sh — the path from a folder of T1 NIfTI scans to an ablation report (README, "From your
# scans to a report"; docs/slurm.md), run end to end on this machine's local one-node SLURM (scripts/slurm-local.sh),
# CPU only, so a newcomer can try every command before spending an A100-week.
#
#   scripts/own-scans-walkthrough.sh [WORK_DIR]        (default outputs/walkthrough; needs root for the local SLURM)
#
# 0. a folder of scans: 24 real-brain T1 "subjects" written as NIfTI (the demo's seeded MONAI transforms of the MNI152
#    template and pydeface's mean head; your own folder goes here)
# 1. encode it on a SLURM job array of 2 shards into one latent store (identity encoder: no MAISI weights here; on a
#    cluster --encoder maisi --checkpoint autoencoder_v1.pt), then look at decoded latents beside their sources
# 2. a smoke test of every arm of sweep=v_head on SLURM (debug=smoke: 2 steps, one evaluation, a checkpoint)
# 3. the sweep itself on SLURM (here 3 epochs on the CPU; on a cluster experiment=brain_maisi and the A100 profile)
# 4. W&B: the offline runs listed for `wandb sync` (run it from a node with network)
# 5. the report
# Each step prints what it wrote; the whole walk takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=${1:-outputs/walkthrough}
mkdir -p "$W"
export WANDB_MODE=${WANDB_MODE:-offline}
bash scripts/slurm-local.sh start >/dev/null

echo "== 0. a folder of scans -> $W/scans"
"$PY" - "$W/scans" <<'PY'
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from neuromf.data.demo import DEMO_PREPROCESS, load_sources, subject_transforms
from neuromf.data.io import _preprocess_array

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
sources = [(ds, _preprocess_array(data, aff, DEMO_PREPROCESS)) for ds, _, data, aff in load_sources()]
for i in range(24):
    ds, base = sources[i % len(sources)]
    t = subject_transforms(atrophy=False)
    t.set_random_state(seed=i)
    image = np.asarray(t(base.as_tensor().clone()))[0].astype(np.float32)
    path = out / f"sub-{i:03d}_{ds}_T1w.nii.gz"
    if not path.exists():
        nib.save(nib.Nifti1Image(image, np.asarray(base.affine)), path)
print(f"{len(list(out.glob('*.nii.gz')))} scans in {out}, e.g. {path.name}: {image.shape}")
PY

echo "== 1. encode on a SLURM array of 2 shards, then check"
"$PY" -m neuromf.encode "$W/scans" --out "$W/latents" --spacing 3 --shape 64 --latent-shape 32 \
    --shards 2 --launcher slurm --partition local --cpus-per-task 1 --mem-gb 4 --timeout-min 30 --no-progress
"$PY" -m neuromf.encode check "$W/latents" --n 2

L="data=latents data.latent_dir=$PWD/$W/latents hydra/launcher=slurm_a100 hydra.launcher.partition=local
   hydra.launcher.gpus_per_node=null hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=4 torch_threads=1
   hydra.launcher.array_parallelism=2"
echo "== 2. a smoke test of every arm on SLURM"
# shellcheck disable=SC2086
"$PY" -m neuromf.train -m sweep=v_head $L debug=smoke hydra.launcher.timeout_min=30 hydra.sweep.dir="$W/smoke"

echo "== 3. the sweep on SLURM"
# shellcheck disable=SC2086
"$PY" -m neuromf.train -m sweep=v_head $L trainer.max_epochs=3 hydra.launcher.timeout_min=60 hydra.sweep.dir="$W/sweep"

echo "== 4. W&B offline runs to sync from a node with network (wandb sync <dir>)"
"$PY" -m wandb sync --dry-run "$W"/sweep/*/wandb/offline-run-* 2>&1 | tail -n 4 || true
ls -d "$W"/sweep/*/wandb/offline-run-*

echo "== 5. the report"
"$PY" -m neuromf.report "$W/sweep"
