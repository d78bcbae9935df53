"""`trainer.strategy: ddp_auto` (conf/trainer/ddp.yaml): DDP's unused-parameter search only where it is needed.

`ddp_find_unused_parameters_true` makes DDP traverse the autograd graph after every forward to find parameters
that will get no gradient. Most configurations train every parameter in every step (iMF's shared v-head loss, the
separate form, plain MeanFlow), so the search is wasted; some leave parameters unused (e.g. iMF with
`loss.v_loss_weight=0` and the shared form: the v-head runs only without a graph, for the tangent). At start,
`choose_ddp_strategy` runs the module's objective + backward once on a tiny random batch on the CPU (RNG state
restored, gradients cleared) and picks `ddp` when every trainable parameter got a gradient,
`ddp_find_unused_parameters_true` otherwise; the choice and the unused names are logged.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("neuromf.train")
AUTO = "ddp_auto"


def unused_parameters(module) -> list[str]:
    """Names of the trainable parameters of `module.net` that one objective + backward leaves without a gradient
    (probe: batch 2 of in_channels x s^3, s = 2^(levels - 1), float32, the module's device)."""
    net, objective = module.net, module.objective
    levels = len(net.unet.block_out_channels)
    s = 2 ** (levels - 1)
    device = next(net.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(2, net.unet.in_channels, s, s, s, generator=g, device=device)
        r, t = torch.tensor([0.3, 0.6], device=device), torch.tensor([0.7, 0.6], device=device)  # r < t and r = t
        was_training, last = net.training, objective.last_point
        net.train()
        net.zero_grad(set_to_none=True)
        try:
            loss, _ = objective(net, x, r=r, t=t, generator=g)
            loss.backward()
            unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
        finally:
            net.zero_grad(set_to_none=True)
            net.train(was_training)
            objective.last_point = last
    return unused


def choose_ddp_strategy(module) -> str:
    """`ddp` or `ddp_find_unused_parameters_true` for this module (see the module docstring); logs the choice."""
    unused = unused_parameters(module)
    if unused:
        shown = ", ".join(unused[:5]) + (f" (+{len(unused) - 5} more)" if len(unused) > 5 else "")
        log.info(
            "trainer.strategy=ddp_auto -> ddp_find_unused_parameters_true: %d parameters get no gradient: %s",
            len(unused),
            shown,
        )
        return "ddp_find_unused_parameters_true"
    log.info("trainer.strategy=ddp_auto -> ddp: every trainable parameter gets a gradient in each step")
    return "ddp"
