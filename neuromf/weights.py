"""`python -m neuromf.weights check KIND FILE`: is this weights file the one the project expects?

KIND: ``maisi-autoencoder`` (for ``neuromf.encode --encoder maisi``), ``maisi-unet`` (for
``init.maisi_checkpoint``), ``radimagenet`` (for ``eval.fid_weights``). The file is loaded by the same code that
uses it in a run (key and shape check against the network it is for) and its SHA-256 (and MD5, the hash the MONAI
model zoo publishes) printed, or compared with ``--sha256`` / ``--md5``. Success: one ``ok`` line; a mismatch: one
``error:`` line naming the file, exit 2. Where to get the files: docs/weights.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

KINDS = ("maisi-autoencoder", "maisi-unet", "radimagenet")


def file_hashes(path: str | os.PathLike, chunk: int = 1 << 20) -> dict[str, str]:
    """{"sha256": ..., "md5": ...} of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def check_maisi_autoencoder(path: str, network: dict | None = None) -> str:
    """Key/shape check against AutoencoderKlMaisi(**published config | network). -> one-line summary."""
    from neuromf.data.encoders import load_maisi_autoencoder

    net, cfg = load_maisi_autoencoder(path, network, device="cpu")
    n = sum(p.numel() for p in net.parameters())
    return (
        f"AutoencoderKlMaisi num_channels={cfg['num_channels']} latent_channels={cfg['latent_channels']}: "
        f"all {len(net.state_dict())} tensors match ({n:,} parameters)"
    )


def check_maisi_unet(path: str, overrides: list[str], modality: int | None, spacing: list[float] | None) -> str:
    """Load into the MeanFlow UNet of the training config ``model=maisi_mr`` + ``overrides`` (what
    ``init.maisi_checkpoint`` does at the start of a run). -> one-line summary."""
    from hydra import compose, initialize_config_dir

    from neuromf.config_compose import CONF_DIR
    from neuromf.instantiate import build
    from neuromf.models.maisi_init import init_from_maisi, read_maisi_checkpoint

    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(config_name="train", overrides=["model=maisi_mr", *overrides])
    state, _ = read_maisi_checkpoint(path)
    folded = []
    if modality is None and "class_embedding.weight" in state:
        modality = 0
        folded.append("modality")
    if spacing is None and "spacing_layer.0.weight" in state:
        spacing = [100.0, 100.0, 100.0]
        folded.append("spacing")
    del state
    net = build(dict(cfg.model), _convert_="all")
    report = init_from_maisi(net, path, spacing=spacing, modality=modality)
    layout = " ".join(["model=maisi_mr", *overrides])
    note = f" (layout check with a placeholder {' and '.join(folded)}: a run sets init.modality / init.spacing)"
    return (
        f"MAISI diffusion UNet for {layout}: loaded {len(report.loaded)} keys, "
        f"{len(report.dropped)} conditioning keys folded{note if folded else ''}"
    )


def check_radimagenet(path: str) -> str:
    """Key/shape check against MONAI's 2D ResNet-50 (torchvision or RadImageNet-port layout). -> summary."""
    from neuromf.evaluation.fid25d import load_resnet50

    model = load_resnet50(path)
    layout = "RadImageNet port (Keras) layout" if model.conv1.bias is not None else "torchvision layout"
    return f"ResNet-50, {layout}: all {len(model.state_dict())} tensors match"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.weights",
        description="Check that a weights file is the one the project expects: loaded by the code that uses it "
        "(key and shape check), with its SHA-256 / MD5 printed or compared. Where to get them: docs/weights.md.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check one file")
    c.add_argument("kind", choices=KINDS, help="what the file is for")
    c.add_argument("file", help="the weights file")
    c.add_argument("--sha256", help="expected SHA-256 (hex); a different file is refused")
    c.add_argument("--md5", help="expected MD5 (hex), e.g. the hash_val of a MONAI bundle's large_files.yml")
    c.add_argument("--maisi-config", help="maisi-autoencoder: JSON string or file of AutoencoderKlMaisi arguments")
    c.add_argument(
        "--override",
        action="append",
        default=[],
        help="maisi-unet: a training-config override for the network (e.g. model.num_channels=[64,128,256,512]); "
        "repeatable",
    )
    c.add_argument("--modality", type=int, help="maisi-unet: the init.modality a run would fold in")
    c.add_argument("--spacing", type=float, nargs=3, help="maisi-unet: the init.spacing a run would fold in")
    args = p.parse_args(argv)
    path = args.file
    try:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        hashes = file_hashes(path)
        for algo in ("sha256", "md5"):
            want = getattr(args, algo)
            if want and want.strip().lower() != hashes[algo]:
                raise ValueError(f"{path}: {algo} {hashes[algo]}, expected {want.strip().lower()}: not the same file")
        if args.kind == "maisi-autoencoder":
            network = None
            if args.maisi_config:
                txt = args.maisi_config
                network = json.loads(Path(txt).read_text() if os.path.isfile(txt) else txt)
            summary = check_maisi_autoencoder(path, network)
        elif args.kind == "maisi-unet":
            summary = check_maisi_unet(path, args.override, args.modality, args.spacing)
        else:
            summary = check_radimagenet(path)
    except Exception as e:  # noqa: BLE001 — every refusal is one line naming the file (the loaders' messages do)
        msg = " ".join(str(e).split())
        print(f"error: {msg if path in msg else f'{path}: {msg}'}", file=sys.stderr)
        return 2
    print(f"ok: {path}: {summary}; sha256 {hashes['sha256']}, md5 {hashes['md5']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
