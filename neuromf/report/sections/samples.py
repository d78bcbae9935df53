"""The sample gallery (fixed noise) and real validation volumes."""

from __future__ import annotations

import shutil
from pathlib import Path

from neuromf.report.core import real_previews, sample_gallery


def _samples(records, arms, tmp: Path, real: bool) -> list:
    blocks = [("h2", "Samples (fixed noise) and real validation volumes")]
    items = sample_gallery(records, arms)
    if not items:
        return blocks + [("p", "No sample PNGs under <run>/samples/ (callbacks.samples disabled or not reached).")]
    gallery = []
    for i, it in enumerate(items):
        dst = tmp / f"sample_{i:02d}.png"
        shutil.copyfile(it["png"], dst)
        step = f"training step {it['step']}" if it["step"] is not None else f"epoch {it['epoch']}"
        steps = f"{it['nfe']} step{'s' if it['nfe'] > 1 else ''}"
        gallery.append((f"{it['arm']} | {steps} | {step} | seed {it['seed']} | {it['png'].stem}", dst))
    blocks.append(("gallery", gallery))
    reals, why = real_previews(records, tmp) if real else ([], "disabled (--no-real)")
    if reals:
        copies = []
        for i, p in enumerate(reals):
            dst = tmp / f"real_val_{i:02d}.png"
            if Path(p).resolve() != dst.resolve():
                shutil.copyfile(p, dst)
            copies.append((f"real validation volume {i}", dst))
        blocks.append(("gallery", copies))
    else:
        blocks.append(("p", f"Real validation volumes not shown: {why}."))
    return blocks


def blocks(ctx) -> list:
    return _samples(ctx.records, ctx.arms, ctx.tmp, ctx.real)
