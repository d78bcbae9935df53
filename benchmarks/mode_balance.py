"""Mode balance of MeanFlow / iMF samples on a two-mode distribution of 16^3 volumes with known shares.

    OMP_NUM_THREADS=1 python benchmarks/mode_balance.py --settings default,l2 --seeds 0,1,2 --steps 300

Data: two smooth, standardised 16^3 templates (a blob in the left / right half), x = template_k + 0.1 n
(n white noise), a fixed set of 256 volumes with exactly `minority` (0.375) of them from template 1 (the
minority mode). A tiny MAISI MeanFlowUNet (channels 8-16-16, no attention) is trained with MeanFlowObjective
(iMF, v-head shared pass, exact JVP), AdamW, gradient clipping 1.0 and an EMA with warm-up, as the trainer
does. Samples from fixed noise are assigned to the template they correlate most with; printed per setting
and seed: the minority share at 1 and 4 steps (trained and EMA weights) and the median correlation with the
nearest template (sharpness; a blend of the two templates has ~0.7).
Settings (comma list): names in SETTINGS, or `key=value` overrides joined by `+` (e.g. `norm_p=0.5+lr=3e-4`).
--every N traces the 1-step share of the trained and EMA weights every N steps.

Measured (2 CPU cores shared, 300 steps, lr 1e-3, batch 16; `--settings default,uniform,uniform-l2 --seeds
0,1,2 --steps 300 --every 50`): 1-step EMA minority share default (logit-normal -0.4, 1) 0.23, 0.00, 0.30
(seeds 0, 1, 2; sharpness 0.92, 0.99, 0.78; the EMA share drifts 0.28 -> 0.48 -> 0.00 within seed 1's run and
0.72 -> 0.23 -> 0.42 within seed 2's), uniform 0.36, 0.31, 0.41 (sharpness 0.98-0.99), uniform with L2
(norm_p 0) not trained in 300 steps (sharpness 0.25-0.36). Why: with 4096 voxels the posterior of the mode
given z_t is mixed only for t in ~[0.94, 0.99] (the mode is decided there); the max of two logit-normal(-0.4, 1)
draws falls there with probability ~1e-3 (uniform pairs: 0.12), so that window is barely trained and the split
is extrapolated; the adaptive weight 1/sg(d + c) (norm_p 1) is mode-seeking where the posterior is mixed
(tests/test_mode_balance.py), which pulls towards the majority.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from neuromf.meanflow import MeanFlowObjective, TimeSampler, noise_like, sample
from neuromf.models import MeanFlowUNet
from neuromf.training.ema import warmup_decay

SIZE = 16
BASE = dict(
    steps=300,
    batch=16,
    lr=1e-3,
    norm_p=1.0,
    norm_eps=0.01,
    distribution="logit_normal",
    mu=-0.4,
    sigma=1.0,
    data_proportion=0.5,
    time_scale=1000.0,
    use_v_head=True,
    ema_decay=0.99,
    minority=0.375,
    channels=(8, 16, 16),
    jvp="exact_fused",
    objective="imf",  # imf (iMF; MeanFlow with use_v_head=False) | fm | alphaflow | splitmeanflow | warmstart
    budget_fm_steps=0,  # > 0: steps from equal compute (the FLOPs of this many FM steps; neuromf/training/budget.py)
)
# the one-step objectives at equal compute (uniform pairs, which keep the shares for iMF; README, Mode balance)
OBJECTIVE_SETTINGS = {
    f"obj-{name}": dict(objective=name, distribution="uniform", **extra)
    for name, extra in (
        ("fm", dict(use_v_head=False)),
        ("imf", {}),
        ("meanflow", dict(use_v_head=False, data_proportion=0.75)),
        ("alphaflow", {}),
        ("splitmeanflow", dict(use_v_head=False)),
        ("warmstart", {}),
    )
}
SETTINGS = {
    "logit-normal": {},  # the papers' logit-normal(-0.4, 1) (BASE); the project's default is now uniform pairs
    "default": {},  # the same as logit-normal: the name earlier tables used
    "l2": dict(norm_p=0.0),
    "p0.5": dict(norm_p=0.5),
    "ts1": dict(time_scale=1.0),
    "meanflow": dict(use_v_head=False, data_proportion=0.75),
    "uniform": dict(distribution="uniform"),  # t, r from uniform pairs: the mode-decision window t > 0.94 is trained
    "uniform-l2": dict(distribution="uniform", norm_p=0.0),
    **OBJECTIVE_SETTINGS,
}


def build_objective(cfg: dict, sampler: TimeSampler):
    """The training objective of a setting; schedules in steps scaled to the run's length."""
    from neuromf.meanflow import AlphaFlowObjective, FlowMatchingObjective, SplitMeanFlowObjective, WarmStartObjective

    common = dict(norm_p=cfg["norm_p"], norm_eps=cfg["norm_eps"], time_sampler=sampler)
    name, steps = cfg["objective"], cfg["steps"]
    if name == "fm":
        return FlowMatchingObjective(**common)
    if name == "splitmeanflow":
        return SplitMeanFlowObjective(**common)
    if name == "alphaflow":  # alpha 1 -> 0 over the first 2/3 of the run (then the MeanFlow / iMF target)
        return AlphaFlowObjective(jvp=cfg["jvp"], anneal_start=0, anneal_end=max(1, 2 * steps // 3), **common)
    if name == "warmstart":  # FM for the first 1/3, the r = t share ramped to data_proportion over the next 1/6
        return WarmStartObjective(jvp=cfg["jvp"], fm_steps=steps // 3, ramp_steps=steps // 6, **common)
    return MeanFlowObjective(jvp=cfg["jvp"], **common)


def templates(size: int = SIZE) -> Tensor:
    """Two smooth templates (2, 1, S, S, S), each of zero mean and unit standard deviation: a Gaussian blob in
    the left (mode 0, majority) or right (mode 1, minority) half of the volume, on a shared smooth background."""
    g = torch.linspace(-1, 1, size)
    zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
    background = 0.15 * torch.exp(-(xx**2 + yy**2 + zz**2) / 0.5)
    blobs = [torch.exp(-((xx - c) ** 2 + yy**2 + zz**2) / 0.12) for c in (-0.45, 0.45)]
    out = torch.stack([background + b for b in blobs])[:, None]
    out = out - out.mean(dim=(1, 2, 3, 4), keepdim=True)
    return out / out.std(dim=(1, 2, 3, 4), keepdim=True)


def dataset(n: int = 256, minority: float = 0.375, noise: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """x (n, 1, S, S, S) = template_k + noise * N(0, I), exactly round(minority n) of mode 1; labels k (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) < round(minority * n)).long()
    labels = labels[torch.randperm(n, generator=g)]
    x = templates()[labels] + noise * torch.randn((n, 1, SIZE, SIZE, SIZE), generator=g)
    return x, labels


def write_store(out_dir, n: int = 256, minority: float = 0.375, noise: float = 0.1, seed: int = 0) -> Path:
    """`dataset` as a latent store (manifest.csv, stats.json, one safetensors file per volume; identity encoder,
    1 x 16^3), so the trainer and its sweeps run on it: `python -m neuromf.train -m sweep=objectives data=latents
    data.latent_dir=<out_dir> ...` (benchmarks/objectives_table.py). A subject id carries its mode: m0-... / m1-..."""
    import numpy as np

    from neuromf.data.encoders import IdentityEncoder
    from neuromf.data.store import finalize_store, manifest_row, write_latent

    out = Path(out_dir)
    if (out / "stats.json").is_file():
        raise FileExistsError(f"{out} already holds a latent store")
    x, labels = dataset(n, minority, noise, seed)
    rows = []
    for i, (volume, k) in enumerate(zip(x, labels.tolist())):
        subject = f"m{k}-{i:04d}"
        rel = f"latents/{subject}.safetensors"
        meta = {"subject": subject, "source_path": "two-mode", "encoder": "identity"}
        write_latent(out / rel, volume, np.eye(4), meta)
        rows.append(manifest_row(subject, "two_mode", f"mode{k}", "two-mode", rel, volume))
    encoder = IdentityEncoder(image_shape=(SIZE,) * 3)
    spec = {"two_mode": {"n": n, "minority": minority, "noise": noise, "seed": seed, "size": SIZE}}
    finalize_store(out, rows, encoder.config(), spec, scale_factor=1.0)
    return out


def assign(x: Tensor, tmpl: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest template by Pearson correlation: x (B, 1, S, S, S), tmpl (K, 1, S, S, S) -> (mode (B,), corr (B,))."""
    a = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    b = tmpl.flatten(1) - tmpl.flatten(1).mean(1, keepdim=True)
    corr = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # (B, K)
    best, mode = corr.max(dim=1)
    return mode, best


def build_model(cfg: dict, seed: int) -> MeanFlowUNet:
    torch.manual_seed(seed)
    ch = tuple(cfg["channels"])
    return MeanFlowUNet(
        in_channels=1,
        num_channels=ch,
        attention_levels=(False,) * len(ch),
        num_head_channels=4,
        norm_num_groups=4,
        use_v_head=cfg["use_v_head"],
        time_scale=cfg["time_scale"],
    )


def train(cfg: dict, seed: int, every: int = 0, trace: list | None = None) -> tuple[MeanFlowUNet, MeanFlowUNet]:
    """Trains on `dataset` (shuffled epochs of `batch`) for `steps` AdamW steps; returns (net, EMA net).
    every > 0: appends (step, 1-step minority share of net, of EMA net) to `trace` every `every` steps."""
    x, _ = dataset(minority=cfg["minority"], seed=seed)
    net = build_model(cfg, seed)
    ema = copy.deepcopy(net).requires_grad_(False)
    sampler = TimeSampler(cfg["distribution"], mu=cfg["mu"], sigma=cfg["sigma"], data_proportion=cfg["data_proportion"])
    obj = build_objective(cfg, sampler)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=0.0)
    g = torch.Generator().manual_seed(1000 + seed)
    order = torch.randperm(len(x), generator=g)
    pos = 0
    for step in range(cfg["steps"]):
        if pos + cfg["batch"] > len(x):
            order, pos = torch.randperm(len(x), generator=g), 0
        batch = x[order[pos : pos + cfg["batch"]]]
        pos += cfg["batch"]
        loss, _ = obj(net, batch, generator=g, step=step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = warmup_decay(cfg["ema_decay"], step + 1)  # as EMA(warmup=True): n counts the initial copy
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1.0 - decay)
        if every and (step + 1) % every == 0 and trace is not None:
            sampler_kind = obj.sampler
            trace.append(
                (step + 1, evaluate(net, (1,), sampler=sampler_kind)["share1"],
                 evaluate(ema, (1,), sampler=sampler_kind)["share1"])
            )  # fmt: skip
    return net, ema


def evaluate(net, nfe_list=(1, 4), n: int = 64, seed: int = 1234, sampler: str = "average") -> dict[str, float]:
    """Minority share and median nearest-template correlation of n samples from fixed noise, per nfe."""
    eps = noise_like((n, 1, SIZE, SIZE, SIZE), seed)
    out = {}
    for nfe in nfe_list:
        mode, corr = assign(sample(net, eps, nfe, sampler=sampler), templates())
        out[f"share{nfe}"] = float(mode.float().mean())
        out[f"sharp{nfe}"] = float(corr.median())
    return out


def parse_setting(name: str) -> dict:
    if name in SETTINGS:
        return dict(SETTINGS[name])
    out = {}
    for kv in name.split("+"):
        k, v = kv.split("=")
        out[k] = type(BASE[k])(v) if not isinstance(BASE[k], bool) else v.lower() in ("1", "true")
    return out


def run(name: str, seed: int, steps: int | None = None, every: int = 0, budget_fm_steps: int = 0) -> dict:
    cfg = {**BASE, **parse_setting(name)}
    if budget_fm_steps:
        cfg["budget_fm_steps"] = budget_fm_steps
    if steps is not None:
        cfg["steps"] = steps
    row = {"setting": name, "seed": seed}
    if cfg["budget_fm_steps"] > 0:  # equal compute: the steps this objective's counted step cost pays for
        row.update(budget_steps(cfg, seed))
        cfg["steps"] = row["steps"]
    t0 = time.time()
    trace: list = []
    net, ema = train(cfg, seed, every, trace)
    row.update(steps=cfg["steps"], train_s=round(time.time() - t0, 1))
    if trace:
        row["trace"] = trace
    kind = build_objective(cfg, TimeSampler()).sampler
    row.update(evaluate(net, sampler=kind))
    row.update({f"ema_{k}": v for k, v in evaluate(ema, sampler=kind).items()})
    return row


def budget_steps(cfg: dict, seed: int) -> dict:
    """Steps at equal compute: budget = budget_fm_steps FM steps' FLOPs on this network and batch; the
    objective's schedules are scaled to the steps it buys (two passes: the schedule follows the run's length)."""
    from neuromf.training.budget import resolve_budget

    x, _ = dataset(minority=cfg["minority"], seed=seed)
    net = build_model(cfg, seed)
    sampler = TimeSampler(cfg["distribution"], mu=cfg["mu"], sigma=cfg["sigma"], data_proportion=cfg["data_proportion"])
    probe = dict(cfg, steps=cfg["budget_fm_steps"])
    for _ in range(2):
        got = resolve_budget(
            {"fm_steps": cfg["budget_fm_steps"]}, build_objective(probe, sampler), net, x[: cfg["batch"]]
        )
        probe["steps"] = got["steps"]
    return {"steps": got["steps"], "cost_vs_fm": got["step_cost_vs_fm"]}


def table(rows: list[dict]) -> str:
    head = "| setting | seed | steps | share 1 | share 4 | EMA share 1 | EMA share 4 | sharp 1 | EMA sharp 1 | s |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['seed']} | {r['steps']} | {r['share1']:.2f} | {r['share4']:.2f} | "
            f"{r['ema_share1']:.2f} | {r['ema_share4']:.2f} | {r['sharp1']:.3f} | {r['ema_sharp1']:.3f} | "
            f"{r['train_s']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="default,l2")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--every", type=int, default=0, help="trace the 1-step share every this many steps")
    p.add_argument(
        "--budget-fm-steps",
        type=int,
        default=0,
        help="equal compute: each setting's steps from the FLOPs of this many FM steps",
    )
    p.add_argument("--json", default=None, help="append one JSON line per run to this file")
    p.add_argument("--write-store", default=None, metavar="DIR", help="write the data as a latent store and exit")
    a = p.parse_args(argv)
    if a.write_store:
        print(f"two-mode latent store: {write_store(a.write_store)}")
        return
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.settings.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            row = run(name, seed, a.steps, a.every, a.budget_fm_steps)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))
    m = [r["share1"] for r in rows]
    print(f"\nmean 1-step minority share over all rows: {sum(m) / len(m):.3f} (target {BASE['minority']})")


if __name__ == "__main__":
    main()
