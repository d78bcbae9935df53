"""How fast the demo's 1-step samples become brains, per setting: a plain training loop on the demo latents.

Every `--every` steps: median / min Pearson correlation of 8 fixed-noise 1-step (c1) and 4-step (c4) samples with the
mean training volume, for the EMA (warm-up) and the trained weights. Used to choose sweeps/demo.yaml, e.g.

    python benchmarks/demo_probe.py --pred x --ts 1 --lr 2e-3 --ch 8,16,16 --dist uniform --steps 150 --every 50
    python benchmarks/demo_probe.py --pred x --ts 1 --lr 2e-3 --ch 8,16,16 --dist logit_normal --steps 150 --every 50
"""

import argparse
import copy
import time

import torch

from neuromf.data.datamodule import LatentDataModule
from neuromf.meanflow import MeanFlowObjective, noise_like, sample
from neuromf.models import MeanFlowUNet

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=300)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--bs", type=int, default=4)
p.add_argument("--ch", default="16,32,32")
p.add_argument("--ts", type=float, default=1000.0)
p.add_argument("--vhead", type=int, default=1)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--ema", type=float, default=0.99)
p.add_argument("--dp", type=float, default=0.5)
p.add_argument("--dist", default="logit_normal")
p.add_argument("--mu", type=float, default=-0.4)
p.add_argument("--jvp", default="exact")
p.add_argument("--pred", default="u")
p.add_argument("--every", type=int, default=50)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.set_flush_denormal(True)
torch.manual_seed(0)
dm = LatentDataModule(demo_variant="small", batch_size=a.bs, seed=0, run_dir="/tmp/exp/run")
dm.prepare_data()
dm.setup("fit")
train = torch.stack([dm.dataset("train")[i] for i in range(len(dm.dataset("train")))])
val = dm.val_latents()
print("train", train.shape, "val", val.shape, flush=True)
mean = train.mean(0)
ch = [int(c) for c in a.ch.split(",")]
net = MeanFlowUNet(
    in_channels=1,
    num_channels=ch,
    attention_levels=[False] * len(ch),
    num_res_blocks=1,
    num_head_channels=16,
    norm_num_groups=8,
    conditioning="t_h",
    prediction_type=a.pred,
    use_v_head=bool(a.vhead),
    time_scale=a.ts,
)
print("params", sum(p.numel() for p in net.parameters()))
obj = MeanFlowObjective(jvp=a.jvp, time_sampler={"data_proportion": a.dp, "distribution": a.dist, "mu": a.mu})
opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=0.0)
ema = copy.deepcopy(net)
g = torch.Generator().manual_seed(0)
noise = noise_like((8, *train.shape[1:]), 1234)


def corr(x, m):
    x = x.flatten(1)
    m = m.flatten()
    x = x - x.mean(1, keepdim=True)
    m = m - m.mean()
    return (x @ m) / (x.norm(dim=1) * m.norm())


t0 = time.time()
for step in range(1, a.steps + 1):
    idx = torch.randint(len(train), (a.bs,), generator=g)
    loss, diag = obj(net, train[idx], generator=g)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    d = min(a.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.mul_(d).add_(pn, alpha=1 - d)
    if step % a.every == 0 or step == a.steps:
        el = time.time() - t0
        out = []
        for nm, m in (("ema", ema), ("net", net)):
            x1 = sample(m, noise, 1)
            x2 = sample(m, noise, 4)
            c1 = corr(x1, mean)
            c2 = corr(x2, mean)
            out.append(f"{nm} c1 min {c1.min():.3f} med {c1.median():.3f} c4 min {c2.min():.3f} std1 {x1.std():.2f}")
        print(
            f"step {step} {el:.0f}s ({el / step:.2f}s/step) loss_u {float(diag['loss_u']):.3f} "
            f"jvp {float(diag['jvp_norm']):.2f} | " + " | ".join(out),
            flush=True,
        )
