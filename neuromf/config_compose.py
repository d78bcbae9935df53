"""The training config composed without running it: Hydra's compose API on ``conf/`` (the sweep plans of
``neuromf.dashboards``, the report's attribution of config differences to the arm labels)."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose(overrides: list[str]) -> dict:
    """The resolved training config for ``overrides`` (Hydra compose API), with the sweeper's parameters under
    ``_sweep_params`` ({} without a sweep). Raises Hydra's / OmegaConf's errors for overrides that do not compose."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import neuromf.sweep  # noqa: F401  (registers the resumable_optuna sweeper schema the Optuna sweeps use)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        params = cfg.hydra.sweeper.get("params")  # None without a sweep
        sweeper = OmegaConf.to_container(params, resolve=False) if OmegaConf.is_config(params) else {}
        resolved = {
            k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg
            if k != "hydra"
        }
        return {**resolved, "_sweep_params": sweeper}
