"""Two engine figures with closed forms, re-measured on the code (CPU, seconds):

    python benchmarks/engine_checks.py

1. TimeSampler: the share of samples with r != t per per-device batch size B = 1, 2, 3 and data_proportion
   0.25 / 0.5 / 0.75 (expected 1 - data_proportion at every B: one seeded Bernoulli draw per sample), 20,000
   samples each, and the worst deviation.
2. EMA warm-up: the share of the initial weights left in the EMA after 30 updates at decay 0.99, with the warm-up
   min(decay, (1 + n) / (10 + n)) and without it (0.99^30).
"""

from __future__ import annotations

import torch

from neuromf.meanflow import TimeSampler
from neuromf.training.ema import warmup_decay


def r_ne_t_share(data_proportion: float, batch_size: int, samples: int = 20_000, seed: int = 0) -> float:
    sampler = TimeSampler(distribution="logit_normal", data_proportion=data_proportion)
    g = torch.Generator().manual_seed(seed)
    n = differ = 0
    for _ in range(samples // batch_size):
        r, t = sampler(batch_size, generator=g)
        differ += int((r != t).sum())
        n += batch_size
    return differ / n


def initial_weight_share(decay: float, updates: int, warmup: bool = True) -> float:
    share = 1.0
    for n in range(1, updates + 1):
        share *= warmup_decay(decay, n) if warmup else decay
    return share


if __name__ == "__main__":
    worst = 0.0
    for dp in (0.25, 0.5, 0.75):
        for b in (1, 2, 3):
            share = r_ne_t_share(dp, b)
            worst = max(worst, abs(share - (1 - dp)))
            print(f"data_proportion {dp} B {b}: r != t share {share:.3f} (expected {1 - dp:.2f})")
    print(f"worst |share - (1 - data_proportion)|: {worst:.3f}")
    print(
        f"EMA decay 0.99, 30 updates: initial weights' share {initial_weight_share(0.99, 30):.2e} with warm-up, "
        f"{initial_weight_share(0.99, 30, warmup=False):.2f} without"
    )
