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

# A training run that takes seconds on one CPU thread: a tiny UNet, 2 training batches of 2 demo latents, one
# validation batch (val/loss_raw is the objective: eval=none logs no val/swd), CSV logging only.
TINY_TRAIN = [
    *TINY,
    "trainer.log_every_n_steps=1",
    "data.batch_size=2",
    "torch_threads=1",
    "objective=val/loss_raw",
]
# the pruning study (tests/test_sweep_pruning.py, benchmarks/prune_vs_full.py): 3 epochs of 2 steps, a validation
# per epoch; the good learning rate for both baselines (run first), a hopeless one for every sampled trial
PRUNING_EPOCHS = ["trainer.max_epochs=3", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]
HOPELESS = [
    "hydra.sweeper.params=null",
    "optim.beta2=choice(0.99,0.999)",
    "optim.lr=1e-12",
    "hydra.sweeper.baselines=[{optim.lr:1e-3,optim.beta2:0.99},{optim.lr:1e-3,optim.beta2:0.999}]",
]


def slurm_launcher(partition: str, timeout_min: int = 60) -> list[str]:
    """Overrides that point conf/hydra/launcher/slurm_a100.yaml at the local CPU-only cluster."""
    return [
        "hydra/launcher=slurm_a100",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        f"hydra.launcher.timeout_min={timeout_min}",
    ]


def tiny_cfg(*overrides: str):
    """The composed training config (demo data, tiny MAISI UNet, CSV logging) with extra overrides."""
    with initialize_config_dir(config_dir=CONF):
        return compose(config_name="train", overrides=[*TINY, *overrides])
