"""Sharded encoding: shard i of N encodes every N-th input into the store's latents/ and records what it did in
``<store>/shards/shard-<i>-of-<N>.json``; ``merge_shards`` checks that every shard finished on the same inputs and
settings and writes the one manifest.csv / stats.json (/ errors.csv) of the store.

A shard file is written (atomically) only when its shard has finished, so a shard without one died or never ran:
running it again redoes it (latents it had already written with the same settings are kept), and a shard whose
file matches the current inputs and settings is not run again.

Shard file: {shard, num_shards, config_hash, inputs_hash, num_inputs, on_error, scale_factor, encoder, preprocess,
rows: [{index, <manifest columns>}], errors: [{index, file, subject, error}], encoded, kept, seconds, host,
slurm_job_id}. ``index`` is the position of the input in the full input list (the merged manifest keeps its order).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from neuromf.data.io import DataError
from neuromf.data.store import parse_shape
from neuromf.io_atomic import write_text_atomic

SHARD_DIR = "shards"
_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count): the inputs at positions index, index + count, ..."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'2/8' -> Shard(2, 8); raises DataError naming --shard otherwise."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise DataError(f"--shard {text!r}: expected I/N with 0 <= I < N (e.g. 0/8)")
        return cls(int(m.group(1)), int(m.group(2)))

    def take(self, todo: list) -> list:
        return todo[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_path(out_dir: str | os.PathLike, shard: Shard) -> Path:
    width = len(str(shard.count - 1))
    return Path(out_dir) / SHARD_DIR / f"shard-{shard.index:0{width}d}-of-{shard.count}.json"


def inputs_hash(items) -> str:
    """Hash of the full input list (path, subject, dataset, diagnosis, in order): shards of other inputs differ."""
    blob = json.dumps([[it.path, it.subject, it.dataset, it.diagnosis] for it in items])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_shard_record(out_dir, shard: Shard, record: dict) -> Path:
    record = {
        "shard": shard.index,
        "num_shards": shard.count,
        **record,
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
    }
    return write_text_atomic(shard_path(out_dir, shard), json.dumps(record, indent=1))


def read_shard_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        msg = f"{path}: unreadable shard record ({type(e).__name__}: {e}); delete it to redo the shard"
        raise DataError(msg) from e
    for key in ("shard", "num_shards", "config_hash", "inputs_hash", "num_inputs", "rows", "errors"):
        if key not in record:
            raise DataError(f"{path}: shard record without {key!r}; delete it to redo the shard")
    return record


def finished_record(out_dir, shard: Shard, config_hash: str, inputs_hash_: str) -> dict | None:
    """The shard's record when it finished on these inputs with these settings, else None (it has to run).
    A record of the same inputs with other settings raises DataError (as a latent of other settings does)."""
    path = shard_path(out_dir, shard)
    if not path.is_file():
        return None
    record = read_shard_record(path)
    if record["inputs_hash"] != inputs_hash_:
        return None
    if record["config_hash"] != config_hash:
        raise DataError(
            f"{path}: shard encoded with different encoder/preprocessing settings; "
            "use --force to re-encode or choose another --out"
        )
    return record


def shard_counts(out_dir) -> set[int]:
    """The shard counts N of the shard records in the store."""
    folder = Path(out_dir) / SHARD_DIR
    if not folder.is_dir():
        return set()
    return {int(m.group(2)) for p in folder.iterdir() if (m := _SHARD_FILE.match(p.name))}


@dataclass
class MergedShards:
    rows: list[dict]
    errors: list[dict]
    encoder: dict
    preprocess: dict
    scale_factor: float | str | None
    on_error: str
    num_shards: int
    encoded: int
    kept: int


def collect_shards(out_dir, count: int | None = None) -> MergedShards:
    """Read and check the shard records of a store: all ``count`` shards finished, on the same inputs and settings;
    every input is in exactly one manifest row or error; subject ids are unique; each row's latent file exists,
    was written with the store's settings and has the row's shape. Raises DataError naming the file otherwise."""
    out_dir = Path(out_dir)
    counts = shard_counts(out_dir)
    if count is None:
        if not counts:
            raise DataError(f"{out_dir / SHARD_DIR}: no shard records (encode with --shard I/N or --shards N first)")
        if len(counts) > 1:
            raise DataError(
                f"{out_dir / SHARD_DIR}: records of {sorted(counts)} shards; pass --shards N to say which to merge"
            )
        count = next(iter(counts))
    shards = [Shard(i, count) for i in range(count)]
    missing = [s.index for s in shards if not shard_path(out_dir, s).is_file()]
    if missing:
        listed = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise DataError(
            f"{out_dir / SHARD_DIR}: {len(missing)} of {count} shards not finished ({listed}); run them "
            "(--shard I/N, or the same --shards command again: finished shards are kept), then merge"
        )
    records = [read_shard_record(shard_path(out_dir, s)) for s in shards]
    first = records[0]
    for s, rec in zip(shards, records, strict=True):
        path = shard_path(out_dir, s)
        for key in ("config_hash", "inputs_hash", "num_inputs"):
            if rec[key] != first[key]:
                raise DataError(
                    f"{path}: {key} {rec[key]!r} differs from shard 0's {first[key]!r} (encoded on other inputs or "
                    "settings); run this shard again with the same command as the others"
                )
        if (rec["shard"], rec["num_shards"]) != (s.index, s.count):
            raise DataError(f"{path}: records shard {rec['shard']}/{rec['num_shards']}, not {s}")
    rows = sorted((r for rec in records for r in rec["rows"]), key=lambda r: r["index"])
    errors = sorted((e for rec in records for e in rec["errors"]), key=lambda e: e["index"])
    _check_coverage(out_dir, rows, errors, int(first["num_inputs"]))
    _check_latents(out_dir, rows, first["config_hash"])
    return MergedShards(
        rows=rows,
        errors=errors,
        encoder=first["encoder"],
        preprocess=first["preprocess"],
        scale_factor=first.get("scale_factor"),
        on_error=first.get("on_error", "stop"),
        num_shards=count,
        encoded=sum(int(rec.get("encoded", 0)) for rec in records),
        kept=sum(int(rec.get("kept", 0)) for rec in records),
    )


def _check_coverage(out_dir: Path, rows: list[dict], errors: list[dict], num_inputs: int) -> None:
    seen: dict[int, str] = {}
    for kind, entries in (("manifest row", rows), ("error", errors)):
        for e in entries:
            if e["index"] in seen:
                raise DataError(
                    f"{out_dir / SHARD_DIR}: input {e['index']} ({e.get('source_path') or e.get('file')}) is both a "
                    f"{seen[e['index']]} and a {kind}"
                )
            seen[e["index"]] = kind
    absent = sorted(set(range(num_inputs)) - set(seen))
    if absent:
        raise DataError(f"{out_dir / SHARD_DIR}: inputs {absent[:10]} are in no shard's rows or errors")
    subjects: dict[str, str] = {}
    for r in rows:
        if r["subject"] in subjects:
            raise DataError(
                f"{out_dir / SHARD_DIR}: subject {r['subject']!r} encoded twice ({subjects[r['subject']]}, "
                f"{r['source_path']})"
            )
        subjects[r["subject"]] = r["source_path"]


def _check_latents(out_dir: Path, rows: list[dict], config_hash: str) -> None:
    for r in rows:
        path = out_dir / r["latent_file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                shape = tuple(f.get_slice("latent").get_shape())
        except Exception as e:  # missing, truncated or not safetensors
            raise DataError(f"{path}: latent of {r['subject']!r} unreadable ({type(e).__name__}: {e})") from e
        if meta.get("config_hash") != config_hash:
            raise DataError(f"{path}: written with other encoder/preprocessing settings than its shard records")
        if shape != parse_shape(r["shape"]):
            raise DataError(f"{path}: latent shape {shape} but its shard records {r['shape']}")
