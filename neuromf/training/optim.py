"""AdamW and the learning-rate schedules (linear warmup, then constant / linear / cosine decay)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

SCHEDULES = ("constant", "linear", "cosine")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim: dict) -> torch.optim.AdamW:
    """AdamW(lr, (beta1, beta2), weight_decay) from the `optim` config."""
    return torch.optim.AdamW(
        params,
        lr=float(optim["lr"]),
        betas=(float(optim.get("beta1", 0.9)), float(optim.get("beta2", 0.999))),
        weight_decay=float(optim.get("weight_decay", 0.0)),
    )


def build_scheduler(optimizer: torch.optim.Optimizer, optim: dict, total_steps: int) -> LRScheduler:
    """Per-step schedule. Warmup: lr * (k + 1) / warmup_steps for k < warmup_steps; then over the remaining
    steps constant, linear to lr * min_lr_ratio, or cosine to lr * min_lr_ratio."""
    schedule, warmup = optim.get("schedule", "constant"), int(optim.get("warmup_steps", 0))
    min_ratio = float(optim.get("min_lr_ratio", 0.0))
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r}: expected one of {SCHEDULES}")
    decay_steps = max(1, total_steps - warmup)
    if schedule == "constant":
        main: LRScheduler = ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif schedule == "linear":
        main = LinearLR(optimizer, start_factor=1.0, end_factor=max(min_ratio, 1e-12), total_iters=decay_steps)
    else:
        base = optimizer.param_groups[0]["lr"]
        main = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=base * min_ratio)
    if warmup <= 0:
        return main
    warm = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup])
