"""Start a MeanFlowUNet from a MAISI diffusion UNet checkpoint file (`init.maisi_checkpoint=<path>`).

The published MAISI MR checkpoint (NV-Generate-MR `diff_unet_3d_rflow-mr.pt`) holds a dict with `unet_state_dict`
(and `scale_factor`, `num_train_timesteps`, ...) of a `DiffusionModelUNetMaisi` built with `include_fc`,
`resblock_updown`, a modality `class_embedding` (added to the time embedding) and a `spacing_layer` (its output
*concatenated* to the time embedding, so every block's `time_emb_proj` takes 2 x its width). MeanFlow is
unconditional, so the run fixes the modality and the spacing (`init.modality`, `init.spacing`) and folds them
into the weights exactly (hand-written: no library maps MAISI's conditioning away):

  emb' = time_embed(t) + E[modality]            -> time_embed's last bias += E[modality]
  proj(silu([emb', s])) = W_t silu(emb') + W_s silu(s) + b,  s = spacing_layer(spacing)
                                                -> W = W_t,  b' = b + W_s silu(s)

so the loaded u-head at r = t equals MAISI's (negated) velocity for that modality and spacing. What is left out
(the conditioning layers themselves) is reported. Refused, naming the file and the keys:

* `model.prediction_type=x`: MAISI's head predicts a velocity, not x_hat;
* `model.conditioning=h`: the UNet's time embedding would see h (0 at r = t) instead of t;
* `model.time_scale` other than the checkpoint's `num_train_timesteps` (1000): MAISI's embedding saw t x 1000;
* body-region inputs (MAISI CT), a modality or spacing input without `init.modality` / `init.spacing`, a layout
  that differs from the model config (missing, unexpected or reshaped keys).

MAISI's rectified-flow target is x - eps and MeanFlow's velocity v = eps - x (same t convention: t = 1 is noise),
so the output conv is negated (MeanFlowUNet.load_maisi_state_dict). The v-head and the extra (r or h) embedding
keep their zero-initialised outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

# conditioning inputs of DiffusionModelUNetMaisi that an unconditional MeanFlow UNet has no use for
CONDITIONING_PREFIXES = ("class_embedding.", "spacing_layer.")
REGION_PREFIXES = ("top_region_index_layer.", "bottom_region_index_layer.")


class MaisiInitError(ValueError):
    """A MAISI checkpoint that cannot start this network (message names the file and the keys)."""


@dataclass
class MaisiInitReport:
    """What `init_from_maisi` did: keys loaded, conditioning keys folded in and left out, the checkpoint's metadata."""

    path: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def summary(self) -> str:
        groups = sorted({k.split(".")[0] for k in self.dropped})
        dropped = (
            f"; folded and left out {len(self.dropped)} conditioning keys ({', '.join(groups)})" if self.dropped else ""
        )
        return f"started from MAISI checkpoint {self.path}: loaded {len(self.loaded)} keys{dropped}"


def read_maisi_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """-> (UNet state dict, metadata) of a MAISI checkpoint: a dict with `unet_state_dict` or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise MaisiInitError(f"init.maisi_checkpoint={path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one line naming it
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: not a readable torch checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(payload, dict):
        raise MaisiInitError(f"init.maisi_checkpoint={path}: expected a dict, found {type(payload).__name__}")
    state = payload.get("unet_state_dict", payload)
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise MaisiInitError(f"init.maisi_checkpoint={path}: no `unet_state_dict` and not a state dict of tensors")
    metadata = {k: (v.item() if isinstance(v, Tensor) and v.numel() == 1 else v) for k, v in payload.items()}
    metadata.pop("unet_state_dict", None)
    metadata = {k: v for k, v in metadata.items() if isinstance(v, int | float | str)}
    return dict(state), metadata


def check_maisi_compatible(net, path: str | Path, metadata: dict) -> None:
    """Refuse (MaisiInitError) network settings under which MAISI weights would give a wrong start."""
    if net.prediction_type != "u":
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: model.prediction_type=x cannot start from MAISI weights (MAISI predicts a "
            "velocity, not x_hat); use model.prediction_type=u"
        )
    if net.conditioning == "h":
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: model.conditioning=h cannot start from MAISI weights (its time embedding "
            "would see h = t - r instead of t); use model.conditioning=t_h or dual"
        )
    steps = float(metadata.get("num_train_timesteps", 1000))
    if float(net.time_scale) != steps:
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: model.time_scale={net.time_scale} but the checkpoint's time embedding was "
            f"trained on t x {steps:g}; set model.time_scale={steps:g}"
        )


def _fold_conditioning(state: dict[str, Tensor], path, spacing, modality) -> dict[str, Tensor]:
    """A MAISI state dict with a fixed modality and spacing folded in (see the module docstring): unconditional keys."""
    state = dict(state)
    regions = sorted(k for k in state if k.startswith(REGION_PREFIXES))
    if regions:
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: body-region inputs ({regions[0]}, ...) are not supported (MAISI CT "
            "models); use a MAISI MR checkpoint"
        )
    if "class_embedding.weight" in state:
        table = state.pop("class_embedding.weight")
        if modality is None or not 0 <= int(modality) < table.shape[0]:
            raise MaisiInitError(
                f"init.maisi_checkpoint={path} has a modality embedding (class_embedding, {table.shape[0]} classes): "
                f"set init.modality to the class index of your data, in [0, {table.shape[0] - 1}]"
            )
        last = max((k for k in state if k.startswith("time_embed.") and k.endswith(".bias")), key=_layer_index)
        state[last] = state[last] + table[int(modality)]
    if "spacing_layer.0.weight" in state:
        if spacing is None or len(spacing) != 3:
            raise MaisiInitError(
                f"init.maisi_checkpoint={path} has a spacing input (spacing_layer): set init.spacing to the three "
                "values MAISI's scripts feed for your latents (voxel spacing in mm x 100)"
            )
        sp = torch.as_tensor(spacing, dtype=state["spacing_layer.0.weight"].dtype)
        hidden = F.silu(sp @ state.pop("spacing_layer.0.weight").T + state.pop("spacing_layer.0.bias"))
        s = hidden @ state.pop("spacing_layer.2.weight").T + state.pop("spacing_layer.2.bias")
        width = s.shape[0]
        for key in [k for k in state if k.endswith("time_emb_proj.weight")]:
            w, b = state[key], state[key[: -len("weight")] + "bias"]
            if w.shape[1] != 2 * width:
                raise MaisiInitError(
                    f"init.maisi_checkpoint={path}: {key} has {w.shape[1]} inputs, expected {2 * width}"
                )
            state[key] = w[:, :width].contiguous()
            state[key[: -len("weight")] + "bias"] = b + w[:, width:] @ F.silu(s)
    return state


def _layer_index(key: str) -> int:
    return int(key.split(".")[1])


def init_from_maisi(net, path: str | Path, spacing=None, modality: int | None = None) -> MaisiInitReport:
    """Load a MAISI checkpoint into `net` (a MeanFlowUNet) with `modality` and `spacing` folded in; raise
    MaisiInitError naming the file and the keys when it cannot start right."""
    raw, metadata = read_maisi_checkpoint(path)
    check_maisi_compatible(net, path, metadata)
    backbone = _fold_conditioning(raw, path, spacing, modality)
    dropped = sorted(k for k in raw if k.startswith(CONDITIONING_PREFIXES))
    own = net.unet.state_dict()
    unexpected = sorted(set(backbone) - set(own))
    missing = sorted(set(own) - set(backbone))
    mismatched = sorted(k for k in set(own) & set(backbone) if own[k].shape != backbone[k].shape)
    problems = []
    for name, keys in (("missing from the checkpoint", missing), ("not in the network", unexpected)):
        if keys:
            problems.append(f"{len(keys)} keys {name} (e.g. {', '.join(keys[:3])})")
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"{len(mismatched)} keys of another shape (e.g. {k}: {tuple(backbone[k].shape)} vs {tuple(own[k].shape)})"
        )
    if problems:
        raise MaisiInitError(
            f"init.maisi_checkpoint={path}: the checkpoint's UNet does not match the model config: "
            f"{'; '.join(problems)}. Build the network with the checkpoint's layout (model=maisi_mr for the "
            "published MR UNet)"
        )
    net.load_maisi_state_dict(backbone, flip_velocity=True)
    report = MaisiInitReport(path=str(path), loaded=sorted(backbone), dropped=dropped, metadata=metadata)
    log.info(report.summary())
    return report
