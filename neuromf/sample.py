"""`python -m neuromf.sample CKPT [--n 4] [--nfe 1] [--seed 0] [--out DIR] [--no-ema]`: checkpoint -> samples.

Writes latents (samples.pt, normalised space), decoded NIfTI and tri-planar PNG previews, and prints where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from neuromf.io_atomic import atomic_path
from neuromf.meanflow import noise_like, sample, sampler_of
from neuromf.run_dir import RunDir
from neuromf.tracking.checkpoint_network import CheckpointError, load_network


def argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (one line), None when they are usable."""
    if args.n < 1:
        return f"--n {args.n}: the number of samples must be >= 1"
    if args.nfe < 1:
        return f"--nfe {args.nfe}: the number of sampling steps must be >= 1"
    if args.out is not None:
        existing = next((p for p in (Path(args.out), *Path(args.out).parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"--out {args.out}: {existing} exists and is not a directory"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m neuromf.sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("checkpoint", help="a .ckpt written by python -m neuromf.train (e.g. <run>/checkpoints/last.ckpt)")
    ap.add_argument("--n", type=int, default=4, help="number of samples (default 4)")
    ap.add_argument("--nfe", type=int, default=1, help="sampling steps: 1 = one-step, >1 = Euler (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (same seed -> same samples)")
    ap.add_argument("--out", default=None, help="output dir (default <run>/samples/cli_nfe<N>_seed<S>)")
    ap.add_argument("--no-ema", action="store_true", help="use the trained instead of the EMA weights")
    ap.add_argument("--latent-dir", default=None, help="latent store to decode with (default: the training one)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    problem = argument_error(args)
    if problem:  # before anything is loaded or created
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        net, hparams = load_network(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # the sampler the checkpoint's objective trained its network for (flow matching: Euler on u(z, t, t))
        sampler = sampler_of(hparams.get("loss"))
    except (ValueError, ImportError) as err:
        print(f"error: {args.checkpoint}: hyper-parameter loss: {err}", file=sys.stderr)
        return 2
    from neuromf.data.datamodule import datamodule_from_config

    data = dict(hparams.get("data") or {"_target_": "neuromf.data.LatentDataModule"})
    if args.latent_dir:
        data["latent_dir"] = args.latent_dir
    dm = datamodule_from_config(data)
    dm.setup()
    ckpt = Path(args.checkpoint).resolve()
    out = Path(args.out) if args.out else RunDir(ckpt.parent.parent).samples / f"cli_nfe{args.nfe}_seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    eps = noise_like((args.n, *dm.latent_shape), args.seed, device=args.device)
    z = sample(net, eps, nfe=args.nfe, sampler=sampler).float().cpu()
    with atomic_path(out / "samples.pt") as tmp:
        torch.save(z, tmp)
    for i in range(args.n):
        dm.save_sample(z[i], out / f"sample_{i:02d}")
    print(
        f"wrote {args.n} samples (nfe={args.nfe}, {sampler} sampler, seed={args.seed}, "
        f"{'EMA' if not args.no_ema else 'trained'} weights) to {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
