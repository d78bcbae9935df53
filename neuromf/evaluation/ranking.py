"""Do the metrics rank sample sets of known quality in the right order? (demo data, no download)

Sets of ``n`` latents (the evaluation's ``num_samples``) scored against the validation latents, as the
EvaluationCallback scores generated samples, from best to worst:

1. ``held-out real``  — training-split latents (other subjects than the validation reference);
2. ``augmented real`` — the same, lightly augmented: MONAI RandAffine (3 degrees, 3 % scale, 1 voxel; within the
   demo data's own variation) and RandGaussianNoise (std 0.1 of the normalised intensities: off the data);
3. ``smoothed``       — the same, Gaussian-smoothed (sigma = 1 latent voxel);
4. ``collapsed``      — one of them repeated n times with small noise (std 0.05): a collapsed sampler;
5. ``noise``          — Gaussian noise latents of the same shape.

    python -m neuromf.evaluation.ranking [--variant small] [--num-samples 16] [--draws 1] [--input-size 64]

prints a markdown table of every metric per set (mean over ``--draws`` draws of the training subjects) and,
per metric, the fraction of draws in which it ranks all five sets in the right order.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from neuromf.evaluation.suite import HIGHER_IS_BETTER, UNRANKED, MetricSuite

__all__ = ["SET_NAMES", "collapsed_set", "known_quality_sets", "rank_correct", "score_sets", "main"]

SET_NAMES = ("held-out real", "augmented real", "smoothed", "collapsed", "noise")


@torch.no_grad()
def known_quality_sets(train: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """train (T, C, D, H, W) real latents (T >= n) -> {set name: (n, C, D, H, W)}, best to worst (SET_NAMES)."""
    from monai.transforms import GaussianSmooth, RandAffine, RandGaussianNoise

    if train.shape[0] < n:
        raise ValueError(f"need >= {n} training latents, got {train.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    base = train[torch.randperm(train.shape[0], generator=g)[:n]].float()
    aff = RandAffine(
        prob=1.0,
        rotate_range=(math.radians(3),) * 3,
        scale_range=(0.03,) * 3,
        translate_range=(1,) * 3,
        padding_mode="border",
    )
    aff.set_random_state(seed)
    noisy = RandGaussianNoise(prob=1.0, std=0.1, sample_std=False)
    noisy.set_random_state(seed)
    augmented = torch.stack([torch.as_tensor(noisy(aff(x))) for x in base])
    smooth = GaussianSmooth(sigma=1.0)
    smoothed = torch.stack([torch.as_tensor(smooth(x)) for x in base])
    collapsed = collapsed_set(base, g)
    noise = torch.randn(base.shape, generator=g)
    sets = [base, augmented, smoothed, collapsed, noise]
    return {k: v.float().contiguous() for k, v in zip(SET_NAMES, sets, strict=True)}


def collapsed_set(base: torch.Tensor, generator: torch.Generator, std: float = 0.05) -> torch.Tensor:
    """base (n, C, D, H, W) real latents -> its first volume repeated n times plus small noise (std ``std``): what a
    sampler that collapsed onto one training volume would give (a reference level of the evaluation, too)."""
    return base[:1].expand_as(base) + std * torch.randn(base.shape, generator=generator)


def score_sets(suite: MetricSuite, sets: dict[str, torch.Tensor], real: torch.Tensor) -> dict[str, dict[str, float]]:
    """{set: {metric: value}} of each set against the real latents (N, C, D, H, W); adds ``msssim`` of the real set
    under the key ``real (reference)``."""
    ref = suite.reference(real)
    out = {name: suite(z, ref) for name, z in sets.items()}
    if ref.msssim is not None:
        out["real (reference)"] = {"msssim": ref.msssim}
    return out


def rank_correct(values: list[float], metric: str) -> bool:
    """True when values (in SET_NAMES order, best first) are strictly worse one after the other."""
    if any(v is None or not math.isfinite(v) for v in values):
        return False
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    return all(sign * a < sign * b for a, b in zip(values, values[1:], strict=False))


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def markdown_table(results: list[dict[str, dict[str, float]]]) -> str:
    """Mean over draws per set and metric, the direction and the fraction of draws ranked in the right order."""
    metrics = [m for m in results[0][SET_NAMES[0]]]
    head = ["metric", "better", *SET_NAMES, "real (reference)", "right order"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        cells = []
        for s in (*SET_NAMES, "real (reference)"):
            vals = [r[s][m] for r in results if m in r.get(s, {})]
            cells.append(_fmt(sum(vals) / len(vals)) if vals else "–")
        if m in UNRANKED:
            better, ok = "≈ real", "–"
        else:
            better = "higher" if m in HIGHER_IS_BETTER else "lower"
            hits = [rank_correct([r[s].get(m) for s in SET_NAMES], m) for r in results]
            ok = f"{sum(hits)}/{len(hits)}"
        lines.append("| " + " | ".join([f"`{m}`", better, *cells, ok]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromf.evaluation.ranking", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="small", help="demo data variant (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=16, help="set size (eval.num_samples; default: %(default)s)")
    p.add_argument("--draws", type=int, default=1, help="draws of the training subjects (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=64, help="deepbet input size (default: %(default)s)")
    p.add_argument("--knn-k", type=int, default=3, help="k of the k-NN metrics (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from neuromf.data import LatentDataModule
    from neuromf.data.demo import ensure_demo
    from neuromf.evaluation.feat3d import DeepBetFeatures

    dm = LatentDataModule(latent_dir=str(ensure_demo(args.variant)))
    dm.setup()
    real = dm.val_latents()
    train = dm.train_latents()
    suite = MetricSuite(dm.decode, feat3d=DeepBetFeatures(input_size=args.input_size), knn_k=args.knn_k)
    t0 = time.perf_counter()
    results = [score_sets(suite, known_quality_sets(train, args.num_samples, seed=s), real) for s in range(args.draws)]
    print(
        f"{args.draws} draw(s) of {args.num_samples} samples per set vs {real.shape[0]} validation latents "
        f"(demo {args.variant}, deepbet input {args.input_size}^3, k={args.knn_k}); {time.perf_counter() - t0:.0f} s\n"
    )
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
