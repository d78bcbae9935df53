"""Sweep plumbing for Hydra: a resumable Optuna sweeper, a local launcher with a parallelism limit and the
end-of-sweep summary callback."""

# register ResumableOptunaSweeper and ParallelLocalLauncher (and their schemas) with Hydra
from neuromf.sweep import local_launcher as _local_launcher  # noqa: F401
from neuromf.sweep import optuna as _optuna  # noqa: F401
