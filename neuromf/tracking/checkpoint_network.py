"""The network of a checkpoint: the MeanFlowUNet rebuilt from a `.ckpt`'s own model config, its (EMA) weights
loaded as data only (neuromf/tracking/safe_load.py). What the sample CLI and the final evaluation sample from.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from neuromf.instantiate import build
from neuromf.tracking.safe_load import UnsafeCheckpointError, load_tensors_only


class CheckpointError(ValueError):
    """The checkpoint is missing, not a NeuroMF checkpoint, or does not match its own model config."""


def load_network(ckpt_path: str | Path, use_ema: bool = True, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the MeanFlowUNet from the checkpoint's hyper-parameters and load its (EMA) weights.

    Loaded as data only (neuromf/tracking/safe_load.py): a checkpoint holding anything but tensors is refused."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = load_tensors_only(path, map_location=device)
    except UnsafeCheckpointError as err:
        raise CheckpointError(str(err)) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a NeuroMF checkpoint (a {type(ckpt).__name__}, not a dict)")
    hparams = ckpt.get("hyper_parameters", {})
    if "model" not in hparams or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a NeuroMF checkpoint (no hyper_parameters.model / state_dict)")
    # EMAWeightAveraging stores the EMA weights as state_dict and the trained ones as current_model_state
    key = "state_dict" if use_ema or "current_model_state" not in ckpt else "current_model_state"
    if use_ema and "current_model_state" not in ckpt:
        print(f"note: {path} has no EMA weights; using the trained weights", file=sys.stderr)
    weights = {k[len("net.") :]: v for k, v in ckpt[key].items() if k.startswith("net.")}
    try:
        net = build(hparams["model"], _convert_="all")
        net.load_state_dict(weights, strict=True)
    except Exception as err:
        raise CheckpointError(f"{path}: weights do not match the model config stored in it: {err}") from err
    return net.to(device).eval(), hparams
