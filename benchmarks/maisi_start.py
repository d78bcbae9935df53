"""iMF's first steps from MAISI-format weights: the v-head started as a copy of the loaded velocity head (the
platform's start: v_hat(z, t) = u(z, t, t), so the first tangent is the loaded network's velocity) against a zero
v-head (the earlier start: v_hat = 0, so the first tangent, and the first targets' du/dt, are 0).

No MAISI weights install offline, so the "MAISI checkpoint" is a plain DiffusionModelUNetMaisi trained here for
--pretrain-steps as a rectified-flow velocity model in MAISI's convention (network time t x 1000, target x - eps,
modality class and spacing inputs) on the real-brain demo latents. Both starts then load it with
`init_from_maisi` (u-prediction, conditioning t_h) and train iMF (`MeanFlowObjective`, exact_fused JVP, uniform
(r, t) pairs, adaptive weight) for --steps steps on the same batches, noise and times. Printed per window of steps:
loss_u, loss_v, the raw loss, and at step 0 the tangent's norm and direction against v = eps - x.

    python benchmarks/maisi_start.py [--pretrain-steps 300] [--steps 60] [--window 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

from neuromf.data.datamodule import LatentDataModule
from neuromf.data.demo import ensure_demo
from neuromf.meanflow import MeanFlowObjective, TimeSampler
from neuromf.models import MeanFlowUNet
from neuromf.models.maisi_init import init_from_maisi

LAYOUT = dict(num_channels=[8, 16, 16], attention_levels=[False, False, False], num_head_channels=8,
              num_res_blocks=1, norm_num_groups=4)  # fmt: skip
MODALITY, SPACING = 9, [1.0, 1.0, 1.0]


def demo_batches(n_steps: int, batch: int, seed: int) -> list[torch.Tensor]:
    """n_steps batches (B, 1, 32, 32, 32) of z-scored demo training latents, drawn with a seeded generator."""
    with tempfile.TemporaryDirectory() as run:
        dm = LatentDataModule(str(ensure_demo("small")), run_dir=run)
        dm.setup("fit")
        train = dm.dataset("train")
        data = torch.stack([train[i] for i in range(len(train))])
    g = torch.Generator().manual_seed(seed)
    return [data[torch.randint(len(data), (batch,), generator=g)] for _ in range(n_steps)]


def pretrain_maisi(batches: list[torch.Tensor], seed: int, lr: float = 2e-3) -> DiffusionModelUNetMaisi:
    """A DiffusionModelUNetMaisi trained as MAISI's rectified flow: net(z_t, 1000 t, class, spacing) ~ x - eps."""
    torch.manual_seed(seed)
    net = DiffusionModelUNetMaisi(spatial_dims=3, in_channels=1, out_channels=1, include_spacing_input=True,
                                  num_class_embeds=128, **LAYOUT)  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    for x in batches:
        eps = torch.randn(x.shape, generator=g)
        t = torch.rand(x.shape[0], generator=g)
        z = (1 - t.view(-1, 1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1, 1) * eps
        labels = torch.full((x.shape[0],), MODALITY)
        pred = net(z, t * 1000, class_labels=labels, spacing_tensor=torch.tensor([SPACING] * x.shape[0]))
        loss = torch.nn.functional.mse_loss(pred, x - eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def finetune(path: Path, batches: list[torch.Tensor], zero_v_head: bool, seed: int, lr: float) -> list[dict]:
    """iMF from the checkpoint at `path`; per step {loss_u, loss_v, loss_raw}, and the first tangent's norm."""
    net = MeanFlowUNet(in_channels=1, conditioning="t_h", prediction_type="u", use_v_head=True, time_scale=1000.0,
                       **{k: tuple(v) if isinstance(v, list) else v for k, v in LAYOUT.items()})  # fmt: skip
    init_from_maisi(net, path, spacing=SPACING, modality=MODALITY)
    if zero_v_head:
        with torch.no_grad():
            for p in net.v_head.out[-1].parameters():
                p.zero_()
    objective = MeanFlowObjective(jvp="exact_fused", time_sampler=TimeSampler(distribution="uniform"))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 2)
    rows = []
    for step, x in enumerate(batches):
        eps = torch.randn(x.shape, generator=g)
        loss, diag = objective(net, x, eps=eps, generator=g, step=step)
        row = {k: float(diag[k]) for k in ("loss_u", "loss_v", "loss_raw")}
        if step == 0:  # the tangent v_tilde = v_hat(z_t, t) against the conditional velocity v = eps - x
            tangent, v = objective.last_point["v_tilde"].flatten(), (eps - x).flatten()
            row["tangent_norm"] = float(tangent.norm() / v.norm())
            row["tangent_cos"] = float(torch.nn.functional.cosine_similarity(tangent, v, dim=0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the per-step rows of both starts to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    maisi = pretrain_maisi(demo_batches(a.pretrain_steps, a.batch, a.seed), a.seed)
    batches = demo_batches(a.steps, a.batch, a.seed + 100)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "maisi_rflow.pt"
        torch.save({"unet_state_dict": maisi.state_dict(), "num_train_timesteps": 1000}, path)
        runs = {name: finetune(path, batches, zero, a.seed, a.lr) for name, zero in (("copy", False), ("zero", True))}
    for name, rows in runs.items():
        print(f"step 0, v-head start {name}: |tangent| / |eps - x| {rows[0]['tangent_norm']:.3f}, "
              f"cos(tangent, eps - x) {rows[0]['tangent_cos']:.3f}")  # fmt: skip
    print("| steps | v-head start | loss_u | loss_v | raw loss |\n|---|---|---|---|---|")
    for lo in range(0, a.steps, a.window):
        for name, rows in runs.items():
            w = rows[lo : lo + a.window]
            mean = {k: sum(r[k] for r in w) / len(w) for k in ("loss_u", "loss_v", "loss_raw")}
            print(f"| {lo}-{lo + len(w) - 1} | {name} | {mean['loss_u']:.4f} | {mean['loss_v']:.4f} | "
                  f"{mean['loss_raw']:.4f} |")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
