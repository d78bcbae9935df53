"""Sweep plumbing for Hydra: a resumable Optuna sweeper and the end-of-sweep summary callback."""

# registers ResumableOptunaSweeper with Hydra's plugin registry
from neuromf.sweep import optuna as _optuna  # noqa: F401
