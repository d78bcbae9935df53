"""`python -m neuromf.encode`: NIfTI folder or CSV -> latent store (manifest, stats, latents/*.safetensors).

Examples::

    python -m neuromf.encode /data/IXI --out latents/ixi --encoder identity --latent-shape 32
    python -m neuromf.encode subjects.csv --out latents/fomo --encoder maisi \\
        --checkpoint autoencoder_epoch273.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from neuromf.data.encoders import MAISI_DEFAULT_NETWORK, Encoder, EncoderError, IdentityEncoder, MaisiEncoder
from neuromf.data.io import (
    DataError,
    PreprocessConfig,
    as_3tuple,
    build_preprocess,
    is_nifti,
    load_preprocessed,
    strip_nifti_suffix,
)
from neuromf.data.shards import (
    MergedShards,
    Shard,
    collect_shards,
    finished_record,
    inputs_hash,
    write_shard_record,
)
from neuromf.data.store import (
    config_hash,
    finalize_store,
    manifest_row,
    read_latent,
    read_latent_metadata,
    safe_name,
    write_latent,
)


@dataclass
class InputItem:
    path: str
    subject: str
    dataset: str = ""
    diagnosis: str = ""


def collect_inputs(source: str | os.PathLike, dataset: str | None = None) -> list[InputItem]:
    """Folder (recursive *.nii / *.nii.gz; subject = file name without suffix, dataset = folder name) or CSV
    with columns path[,subject][,dataset][,diagnosis] (relative paths are relative to the CSV's folder)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and is_nifti(p) and not p.name.startswith("."))
        if not files:
            raise DataError(f"{source}: no .nii/.nii.gz files found")
        ds = dataset if dataset is not None else source.resolve().name
        return [InputItem(str(p), strip_nifti_suffix(p.name), ds, "") for p in files]
    if source.is_file() and source.suffix.lower() in (".csv", ".tsv"):
        with open(source, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if source.suffix.lower() == ".tsv" else ",")
            cols = reader.fieldnames or []
            if "path" not in cols:
                raise DataError(
                    f"{source}: CSV needs a 'path' column (optional: subject, dataset, diagnosis); got {cols}"
                )
            items = []
            for i, r in enumerate(reader, start=2):
                p = (r.get("path") or "").strip()
                if not p:
                    raise DataError(f"{source}: line {i} has an empty path")
                pp = Path(p) if Path(p).is_absolute() else source.parent / p
                subject = (r.get("subject") or "").strip() or strip_nifti_suffix(pp.name)
                ds = (r.get("dataset") or "").strip() or (dataset or "")
                items.append(InputItem(str(pp), subject, ds, (r.get("diagnosis") or "").strip()))
        if not items:
            raise DataError(f"{source}: CSV has no rows")
        return items
    raise DataError(f"{source}: not a folder of NIfTI files nor a .csv file")


@dataclass
class EncodeResult:
    out_dir: Path
    rows: list[dict]
    errors: list[dict]
    encoded: int
    skipped: int
    seconds: float
    stats: dict


def plan_inputs(items: list[InputItem]) -> tuple[list[tuple[int, InputItem]], list[tuple[int, InputItem, str]]]:
    """-> (todo, duplicates): the (input index, item) pairs to encode, and the later uses of a subject id that an
    earlier input already has (after making ids file-name safe), each with its message. Over the whole input list,
    so that every shard of it agrees."""
    first: dict[str, InputItem] = {}
    todo, duplicates = [], []
    for index, it in enumerate(items):
        key = safe_name(it.subject)
        if key in first:
            msg = f"{it.path}: duplicate subject id {it.subject!r} (also used by {first[key].path})"
            duplicates.append((index, it, msg))
            continue
        first[key] = it
        todo.append((index, it))
    return todo, duplicates


@dataclass
class EncodedItems:
    """What encoding a list of inputs gave: manifest rows and errors, each with its input ``index``."""

    rows: list[dict]
    errors: list[dict]
    encoded: int
    skipped: int
    seconds: float


def encode_items(
    todo: list[tuple[int, InputItem]],
    out_dir: Path,
    encoder: Encoder,
    preprocess: PreprocessConfig,
    on_error: str = "stop",
    force: bool = False,
    progress: bool = True,
    errors: list[dict] | None = None,
) -> EncodedItems:
    """Encode (index, item) pairs -> out_dir/latents/<subject>.safetensors; a latent already written with the same
    settings is kept (unless ``force``). on_error "stop" raises DataError naming the file, "skip" records it."""
    from tqdm import tqdm

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    chash = config_hash(encoder.config(), preprocess.to_dict())
    errors = [] if errors is None else errors

    def fail(index: int, item: InputItem, msg: str):
        if on_error == "stop":
            raise DataError(msg)
        print(f"skipping: {msg}", file=sys.stderr)
        errors.append({"index": index, "file": item.path, "subject": item.subject, "error": msg})

    pipeline = build_preprocess(preprocess)
    rows, n_enc, n_skip = [], 0, 0
    t0 = time.perf_counter()
    for index, it in tqdm(todo, desc="encode", unit="scan", disable=not progress):
        rel = f"latents/{safe_name(it.subject)}.safetensors"
        path = out_dir / rel
        if path.exists() and not force:
            meta = read_latent_metadata(path)
            if meta.get("config_hash") != chash:
                raise DataError(
                    f"{path}: already encoded with different encoder/preprocessing settings; "
                    "use --force to re-encode or choose another --out"
                )
            latent, _ = read_latent(path)
            rows.append({"index": index, **manifest_row(it.subject, it.dataset, it.diagnosis, it.path, rel, latent)})
            n_skip += 1
            continue
        try:
            image, affine = load_preprocessed(it.path, preprocess, pipeline)
        except DataError as e:
            fail(index, it, str(e))
            continue
        latent = encoder.encode(image[None])[0]
        if not torch.isfinite(latent).all():
            fail(index, it, f"{it.path}: encoder produced NaN/Inf latents")
            continue
        meta = {"subject": it.subject, "source_path": it.path, "encoder": encoder.name, "config_hash": chash}
        write_latent(path, latent, affine, meta)
        rows.append({"index": index, **manifest_row(it.subject, it.dataset, it.diagnosis, it.path, rel, latent)})
        n_enc += 1
    return EncodedItems(rows, errors, n_enc, n_skip, time.perf_counter() - t0)


def duplicate_errors(duplicates: list[tuple[int, InputItem, str]], on_error: str) -> list[dict]:
    """The error rows of duplicate subject ids; with on_error "stop" the first one raises DataError."""
    if duplicates and on_error == "stop":
        raise DataError(duplicates[0][2])
    for _, _, msg in duplicates:
        print(f"skipping: {msg}", file=sys.stderr)
    return [{"index": i, "file": it.path, "subject": it.subject, "error": msg} for i, it, msg in duplicates]


def encode_dataset(
    items: list[InputItem],
    out_dir: str | os.PathLike,
    encoder: Encoder,
    preprocess: PreprocessConfig,
    on_error: str = "stop",
    force: bool = False,
    scale_factor: float | str | None = None,
    progress: bool = True,
) -> EncodeResult:
    """Encode every input -> out_dir/latents/<subject>.safetensors + manifest.csv + stats.json.

    Resumable: a latent already written with the same encoder/preprocessing settings is kept (unless
    ``force``).
    on_error: "stop" raises DataError naming the file; "skip" records it in errors.csv and goes on."""
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    out_dir = Path(out_dir)
    todo, duplicates = plan_inputs(items)
    errors = duplicate_errors(duplicates, on_error)
    done = encode_items(todo, out_dir, encoder, preprocess, on_error, force, progress, errors)
    rows = sorted(done.rows, key=lambda r: r["index"])
    errors = sorted(done.errors, key=lambda r: r["index"])
    stats = finalize_store(
        out_dir, rows, encoder.config(), preprocess.to_dict(), scale_factor, errors if on_error == "skip" else None
    )
    return EncodeResult(out_dir, rows, errors, done.encoded, done.skipped, done.seconds, stats)


@dataclass
class ShardResult:
    shard: Shard
    record: dict
    ran: bool  # False: the shard had finished before and was kept


def encode_shard(
    items: list[InputItem],
    out_dir: str | os.PathLike,
    encoder: Encoder,
    preprocess: PreprocessConfig,
    shard: Shard,
    on_error: str = "stop",
    force: bool = False,
    scale_factor: float | str | None = None,
    progress: bool = True,
) -> ShardResult:
    """Encode shard ``shard`` of ``items`` (every N-th input to encode) into out_dir/latents/ and write its record
    out_dir/shards/shard-<i>-of-<N>.json; manifest.csv and stats.json are written by ``merge_store``.
    A shard that finished on the same inputs and settings is kept as it is (unless ``force``)."""
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    out_dir = Path(out_dir)
    enc_cfg, pre_cfg = encoder.config(), preprocess.to_dict()
    chash, ihash = config_hash(enc_cfg, pre_cfg), inputs_hash(items)
    if not force and (record := finished_record(out_dir, shard, chash, ihash)) is not None:
        return ShardResult(shard, record, ran=False)
    todo, duplicates = plan_inputs(items)
    if duplicates and on_error == "stop":  # every shard refuses, before encoding anything
        raise DataError(duplicates[0][2])
    errors = duplicate_errors(duplicates, on_error) if shard.index == 0 else []  # recorded once, by shard 0
    done = encode_items(shard.take(todo), out_dir, encoder, preprocess, on_error, force, progress, errors)
    record = {
        "config_hash": chash,
        "inputs_hash": ihash,
        "num_inputs": len(items),
        "on_error": on_error,
        "scale_factor": scale_factor,
        "encoder": enc_cfg,
        "preprocess": pre_cfg,
        "rows": done.rows,
        "errors": done.errors,
        "encoded": done.encoded,
        "kept": done.skipped,
        "seconds": round(done.seconds, 3),
    }
    write_shard_record(out_dir, shard, record)
    return ShardResult(shard, record, ran=True)


def merge_store(out_dir: str | os.PathLike, count: int | None = None) -> tuple[MergedShards, dict]:
    """Check the shard records of out_dir (``neuromf.data.shards.collect_shards``) and write its manifest.csv,
    stats.json (and errors.csv with on_error "skip") from them. -> (merged shards, stats)."""
    merged = collect_shards(out_dir, count)
    errors = merged.errors if merged.on_error == "skip" else None
    stats = finalize_store(out_dir, merged.rows, merged.encoder, merged.preprocess, merged.scale_factor, errors)
    return merged, stats


def _parse_scale(v: str):
    if v == "auto":
        return "auto"
    try:
        return float(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--scale-factor must be a number or 'auto', got {v!r}") from e


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where there is a default to show (not None, False, [])."""

    def _get_help_string(self, action):
        if (
            action.default is None
            or action.default is False
            or action.default == []
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.encode",
        description="Encode 3D T1 NIfTI volumes into a latent store (one safetensors file per subject, "
        "manifest.csv, stats.json). Preprocessing (MONAI, nibabel reader): orientation RAS, resampling to "
        "--spacing, percentile intensity scaling to [0, 1], crop/pad to --shape; no skull stripping, no "
        "registration, no bias-field correction (docs/data.md). Re-running skips subjects already encoded with "
        "the same settings. Other commands: `python -m neuromf.encode merge STORE` (merge the shards of a "
        "--shard/--shards encoding), `python -m neuromf.encode check STORE` (decode a few latents back into a "
        "tri-planar PNG grid).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "input",
        help="folder of .nii/.nii.gz files (searched recursively) or a CSV with columns "
        "path[,subject][,dataset][,diagnosis]",
    )
    p.add_argument("--out", required=True, help="output latent directory")
    p.add_argument(
        "--encoder",
        choices=["identity", "maisi"],
        default="identity",
        help="identity: the preprocessed image (resampled to --latent-shape) as a 1-channel latent; "
        "maisi: MONAI AutoencoderKlMaisi (4 channels at 1/4 resolution)",
    )
    p.add_argument("--checkpoint", help="maisi: AutoencoderKlMaisi state-dict file (e.g. autoencoder_v1.pt)")
    p.add_argument(
        "--maisi-config",
        help="maisi: JSON file or JSON string overriding the AutoencoderKlMaisi "
        f"constructor arguments (default: the published MAISI autoencoder {MAISI_DEFAULT_NETWORK})",
    )
    p.add_argument("--sample", action="store_true", help="maisi: sample the posterior instead of its mean")
    p.add_argument(
        "--latent-shape",
        type=int,
        nargs="+",
        help="identity: latent grid (1 or 3 ints); default: the preprocessed --shape",
    )
    p.add_argument("--spacing", type=float, nargs="+", default=[1.0], help="target voxel spacing in mm (1 or 3)")
    p.add_argument("--shape", type=int, nargs="+", default=[192], help="crop/pad to this grid (1 or 3 ints)")
    p.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=[0.5, 99.5],
        help="intensity percentiles mapped to 0 and 1 (clipped)",
    )
    p.add_argument("--dataset", help="dataset name for all inputs (default: the folder name; CSV column wins)")
    p.add_argument(
        "--scale-factor",
        type=_parse_scale,
        default=1.0,
        help="latent scale factor recorded in stats.json: a number, or 'auto' = 1/std of the latents",
    )
    p.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="bad input file: stop with a message naming it, or record it in errors.csv and go on",
    )
    p.add_argument("--force", action="store_true", help="re-encode subjects that are already encoded")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = p.add_argument_group(
        "sharding",
        "Encode in N shards: --shard I/N runs one (then `merge`); --shards N runs all N as a submitit job array "
        "(SLURM, or local processes), waits and merges. Running the same command again redoes only the shards "
        "that did not finish.",
    )
    g.add_argument("--shard", type=Shard.parse, help="encode shard I of N (0 <= I < N) and record it; no merge")
    g.add_argument("--shards", type=int, help="run all N shards as one job array, then merge them")
    g.add_argument("--launcher", choices=["slurm", "local"], default="slurm", help="--shards: where the jobs run")
    g.add_argument("--partition", help="--shards on SLURM: partition")
    g.add_argument("--account", help="--shards on SLURM: account")
    g.add_argument("--timeout-min", type=int, default=240, help="--shards: time limit of each job (minutes)")
    g.add_argument("--cpus-per-task", type=int, default=4, help="--shards on SLURM: CPUs of each job")
    g.add_argument("--mem-gb", type=float, default=16.0, help="--shards on SLURM: memory of each job (GB)")
    g.add_argument("--gpus-per-task", type=int, default=0, help="--shards: GPUs of each job (maisi: 1)")
    g.add_argument("--array-parallelism", type=int, help="--shards on SLURM: at most this many jobs at once")
    g.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        help="--shards on SLURM: a shell line run before each job (e.g. 'module load cuda'); repeatable",
    )
    return p


def build_encoder_from_args(args, pre: PreprocessConfig, device: str | None = None) -> Encoder:
    if args.encoder == "identity":
        shape = as_3tuple(args.latent_shape, int) if args.latent_shape else pre.shape
        return IdentityEncoder(latent_shape=shape, image_shape=pre.shape)
    network = None
    if args.maisi_config:
        txt = args.maisi_config
        try:
            network = json.loads(Path(txt).read_text() if os.path.isfile(txt) else txt)
        except json.JSONDecodeError as e:
            raise EncoderError(f"--maisi-config {txt!r}: not valid JSON ({e})") from e
    return MaisiEncoder(args.checkpoint, network, sample=args.sample, device=device or args.device, seed=args.seed)


def _setup(args, device: str | None = None) -> tuple[PreprocessConfig, list[InputItem], Encoder]:
    try:
        spacing, shape = as_3tuple(args.spacing, float), as_3tuple(args.shape, int)
    except ValueError as e:
        raise DataError(f"--spacing / --shape: {e}") from e
    pre = PreprocessConfig(spacing=spacing, shape=shape, percentiles=tuple(args.percentiles))
    items = collect_inputs(args.input, args.dataset)
    return pre, items, build_encoder_from_args(args, pre, device)


def _shard_summary(res: ShardResult) -> dict:
    rec = res.record
    return {
        "shard": str(res.shard),
        "ran": res.ran,
        "encoded": rec.get("encoded", 0) if res.ran else 0,
        "kept": rec.get("kept", 0) if res.ran else len(rec["rows"]),
        "errors": len(rec["errors"]),
        "seconds": rec.get("seconds", 0.0) if res.ran else 0.0,
    }


def run_one_shard(argv: list[str], shard: Shard) -> dict:
    """Encode one shard with the command-line arguments ``argv`` (their --shard/--shards ignored). -> summary.
    Raises DataError / EncoderError naming the file (a shard job's failure)."""
    args = build_parser().parse_args(argv)
    pre, items, encoder = _setup(args)
    res = encode_shard(
        items,
        args.out,
        encoder,
        pre,
        shard,
        on_error=args.on_error,
        force=args.force,
        scale_factor=args.scale_factor,
        progress=not args.no_progress,
    )
    return _shard_summary(res)


def _print_merged(out: Path, merged: MergedShards, stats: dict) -> None:
    print(
        f"merged {merged.num_shards} shards: {stats['num_subjects']} subjects ({merged.encoded} encoded, "
        f"{merged.kept} kept), {len(merged.errors)} errors, latents {'x'.join(map(str, stats['shape']))} -> {out}"
    )
    if merged.errors and merged.on_error == "skip":
        print(f"errors recorded in {out / 'errors.csv'}")


def _launch(argv: list[str], args) -> int:
    from neuromf.data.shard_jobs import ArraySettings, run_array

    if args.shards < 1:
        raise DataError(f"--shards {args.shards}: expected N >= 1")
    out = Path(args.out)
    pre, items, encoder = _setup(args, device="cpu")  # checks inputs and checkpoint before anything is submitted
    chash, ihash = config_hash(encoder.config(), pre.to_dict()), inputs_hash(items)
    shards = [Shard(i, args.shards) for i in range(args.shards)]
    todo = [s for s in shards if args.force or finished_record(out, s, chash, ihash) is None]
    print(f"{len(shards) - len(todo)} of {len(shards)} shards already finished (kept); running {len(todo)}")
    settings = ArraySettings(
        launcher=args.launcher,
        partition=args.partition,
        timeout_min=args.timeout_min,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        gpus_per_task=args.gpus_per_task,
        array_parallelism=args.array_parallelism,
        setup=args.slurm_setup,
        account=args.account,
    )
    failed = run_array(run_one_shard, argv + ["--no-progress"], out, todo, settings)
    if failed:
        for shard, why in failed:
            print(f"error: shard {shard} failed ({why})", file=sys.stderr)
        print(
            f"error: {len(failed)} of {len(shards)} shards failed; finished shards are kept: fix the cause and run "
            f"the same command again (logs: {out / '.submitit'})",
            file=sys.stderr,
        )
        return 2
    merged, stats = merge_store(out, args.shards)
    _print_merged(out, merged, stats)
    return 0


def merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.encode merge",
        description="Check the shard records of a latent store (every shard finished, same inputs and settings, "
        "each input once, every latent file readable with its recorded shape) and write its manifest.csv, "
        "stats.json (and errors.csv).",
    )
    p.add_argument("store", help="the --out of the sharded encoding")
    p.add_argument("--shards", type=int, help="merge the records of N shards (when records of several N exist)")
    args = p.parse_args(argv)
    try:
        merged, stats = merge_store(args.store, args.shards)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_merged(Path(args.store), merged, stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "check":
        from neuromf.data.store_check import main as check_main

        return check_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.shard is not None and args.shards is not None:
            raise DataError("--shard and --shards: give one (--shard I/N runs one shard, --shards N all of them)")
        if args.shards is not None:
            return _launch(argv, args)
        if args.shard is not None:
            summary = run_one_shard(argv, args.shard)
            what = "already finished, kept" if not summary["ran"] else f"encoded {summary['encoded']}"
            print(
                f"shard {summary['shard']}: {what}, {summary['kept']} kept, {summary['errors']} errors in "
                f"{summary['seconds']:.1f} s -> {args.out}; when every shard has finished: "
                f"python -m neuromf.encode merge {args.out}"
            )
            return 0
        pre, items, encoder = _setup(args)
        res = encode_dataset(
            items,
            args.out,
            encoder,
            pre,
            on_error=args.on_error,
            force=args.force,
            scale_factor=args.scale_factor,
            progress=not args.no_progress,
        )
    except (DataError, EncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rate = res.encoded / res.seconds if res.seconds > 0 else float("inf")
    print(
        f"encoded {res.encoded} scans, kept {res.skipped} already encoded, {len(res.errors)} errors "
        f"in {res.seconds:.1f} s ({rate:.2f} scans/s) -> {res.out_dir}"
    )
    if res.errors:
        print(f"errors recorded in {res.out_dir / 'errors.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
