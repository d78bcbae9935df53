"""The sample gallery (fixed noise): one grid image per arm x step count (the smallest and the largest), beside
real validation volumes."""

from __future__ import annotations

import shutil
from pathlib import Path

from neuromf.report.core import real_previews, sample_gallery


def grid(pngs: list[Path], dst: Path, columns: int = 2, pad: int = 4) -> None:
    """The sample PNGs of one arm at one step count as one image: ``columns`` per row, white padding."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in pngs]
    if len(images) == 1:
        images[0].save(dst)
        return
    w, h = max(i.width for i in images), max(i.height for i in images)
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    canvas = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), "white")
    for k, img in enumerate(images):
        canvas.paste(img, ((k % cols) * (w + pad), (k // cols) * (h + pad)))
    canvas.save(dst)


def _samples(records, arms, tmp: Path, real: bool) -> list:
    blocks = [("h2", "Samples (fixed noise) and real validation volumes")]
    items = sample_gallery(records, arms)
    if not items:
        return blocks + [("p", "No sample PNGs under <run>/samples/ (callbacks.samples disabled or not reached).")]
    groups: dict[tuple, list[dict]] = {}
    for it in items:
        groups.setdefault((it["arm"], it["nfe"]), []).append(it)
    gallery = []
    for i, ((arm, nfe), group) in enumerate(groups.items()):
        dst = tmp / f"samples_{i:02d}.png"
        grid([g["png"] for g in group], dst)
        it = group[0]
        step = f"training step {it['step']}" if it["step"] is not None else f"epoch {it['epoch']}"
        steps = f"{nfe} step{'s' if nfe > 1 else ''}"
        names = ", ".join(g["png"].stem for g in group)
        gallery.append((f"{arm} | {steps} | {step} | seed {it['seed']} | {names}", dst))
    reals, why = real_previews(records, tmp) if real else ([], "disabled (--no-real)")
    copies = []
    for i, p in enumerate(reals):  # first in the same gallery: each arm's grid sits beside the real volumes
        dst = tmp / f"real_val_{i:02d}.png"
        if Path(p).resolve() != dst.resolve():
            shutil.copyfile(p, dst)
        copies.append((f"real validation volume {i}", dst))
    blocks.append(("gallery", copies + gallery))
    if not reals:
        blocks.append(("p", f"Real validation volumes not shown: {why}."))
    return blocks


def blocks(ctx) -> list:
    return _samples(ctx.records, ctx.arms, ctx.tmp, ctx.real)
