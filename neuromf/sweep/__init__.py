"""Sweep plumbing for Hydra: a resumable Optuna sweeper and the end-of-sweep summary callback."""
