"""Config builders for training tests: the real Hydra configs with a tiny network and a few steps."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parent.parent / "conf")
TINY = [
    "model.num_channels=[8,8,16]",
    "model.norm_num_groups=4",
    "model.num_head_channels=8",
    "logger=csv",
    "eval=none",
    "callbacks.samples.enabled=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "optim.warmup_steps=0",
]


def tiny_cfg(*overrides: str):
    """The composed training config (demo data, tiny MAISI UNet, CSV logging) with extra overrides."""
    with initialize_config_dir(config_dir=CONF):
        return compose(config_name="train", overrides=[*TINY, *overrides])
