"""Relative errors of `fd` and `exact_fused` against `exact` under CPU bf16 autocast (docs/performance.md).

    OMP_NUM_THREADS=1 python benchmarks/jvp_autocast_error.py

Tiny MAISI net (as tests/engine_helpers.py: 8-16 channels, attention at level 2, zero-initialised layers
randomised), latents 2 x 2 x 16^3, t = (0.7, 0.4), r = (0.2, 0.1). Prints, per prediction type and seed, the
relative L2 error of du/dt and of the iMF loss's parameter gradients against `exact`.
"""

from __future__ import annotations

import torch

from neuromf.meanflow import MeanFlowObjective, time_derivative
from neuromf.meanflow.jvp import jvp_exact
from neuromf.models import MeanFlowUNet

TINY = dict(num_channels=(8, 16), attention_levels=(False, True), num_res_blocks=1, num_head_channels=8)


def tiny_model(seed: int, prediction_type: str) -> MeanFlowUNet:
    torch.manual_seed(seed)
    model = MeanFlowUNet(in_channels=2, norm_num_groups=4, prediction_type=prediction_type, use_v_head=True, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def grads(model, strategy: str, x, eps, r, t) -> torch.Tensor:
    """Parameter gradients (flattened) of the iMF loss under bf16 autocast with the given JVP strategy."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = MeanFlowObjective(jvp=strategy)(model, x, eps=eps, r=r, t=t)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main() -> None:
    torch.set_num_threads(1)
    r, t = torch.tensor([0.2, 0.1]), torch.tensor([0.7, 0.4])
    for pred in ("u", "x"):
        for seed in (0, 1):
            model = tiny_model(seed, pred)
            g = torch.Generator().manual_seed(seed)
            x, eps = torch.randn(2, 2, 16, 16, 16, generator=g), torch.randn(2, 2, 16, 16, 16, generator=g)
            z_t = (1 - t.view(-1, 1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1, 1) * eps
            v_tilde = torch.randn(z_t.shape, generator=g)
            exact = jvp_exact(model, z_t, r, t, v_tilde)

            row = {}
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for strategy in ("fd", "exact_fused"):
                    row[f"du/dt {strategy}"] = rel(time_derivative(model, z_t, r, t, v_tilde, strategy)[1], exact)
            g_exact = grads(model, "exact", x, eps, r, t)
            for strategy in ("fd", "exact_fused"):
                row[f"grad {strategy}"] = rel(grads(model, strategy, x, eps, r, t), g_exact)
            print(f"pred={pred} seed={seed} " + " ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
