"""Sharded encoding (--shard I/N, merge, --shards N through submitit) and the store check (decoded latents shown
tri-planar next to their preprocessed sources), on real T1 volumes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import FAST_PRE, real_t1_folder

from neuromf.data.encoders import IdentityEncoder
from neuromf.data.io import DataError, PreprocessConfig
from neuromf.data.shards import Shard, shard_path
from neuromf.data.store import read_latent, write_latent
from neuromf.encode import collect_inputs, encode_dataset, encode_shard, main, merge_store

ARGS = ["--spacing", "4", "--shape", "32", "--latent-shape", "16", "--no-progress"]


def scan_folder(dst: Path) -> Path:
    """Five real T1 files: nibabel's anatomical, nilearn's MNI152 (2 mm), pydeface's mean head, two copies under
    other names (distinct subjects)."""
    from importlib import resources

    real_t1_folder(dst)
    shutil.copy(resources.files("pydeface") / "data" / "mean_reg2mean.nii.gz", dst / "head.nii.gz")
    shutil.copy(dst / "anatomical.nii", dst / "anatomical_b.nii")
    shutil.copy(dst / "mni152.nii.gz", dst / "mni152_b.nii.gz")
    return dst


def identity():
    return IdentityEncoder(latent_shape=(16, 16, 16), image_shape=FAST_PRE.shape)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def store_files(store: Path) -> dict:
    """What a merged store holds: manifest rows, stats, errors, and each latent's values."""
    stats = json.loads((store / "stats.json").read_text())
    rows = read_csv(store / "manifest.csv")
    latents = {r["subject"]: read_latent(store / r["latent_file"])[0].numpy() for r in rows}
    errors = read_csv(store / "errors.csv") if (store / "errors.csv").exists() else None
    return {"rows": rows, "stats": stats, "errors": errors, "latents": latents}


def assert_same_store(a: Path, b: Path):
    fa, fb = store_files(a), store_files(b)
    assert fa["rows"] == fb["rows"] and fa["stats"] == fb["stats"] and fa["errors"] == fb["errors"]
    for s in fa["latents"]:
        np.testing.assert_array_equal(fa["latents"][s], fb["latents"][s])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return scan_folder(tmp_path_factory.mktemp("scans") / "in")


@pytest.fixture(scope="module")
def single(scans, tmp_path_factory):
    """The same inputs encoded by one process (the reference a merged store must equal)."""
    out = tmp_path_factory.mktemp("single") / "store"
    assert main([str(scans), "--out", str(out), *ARGS]) == 0
    return out


def test_shard_parse():
    assert Shard.parse("2/8") == Shard(2, 8) and str(Shard(2, 8)) == "2/8"
    assert Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(DataError, match="--shard"):
            Shard.parse(bad)


def test_shards_then_merge_equal_one_process(scans, single, tmp_path, capsys):
    out = tmp_path / "store"
    for i in range(3):
        assert main([str(scans), "--out", str(out), *ARGS, "--shard", f"{i}/3"]) == 0
        assert f"shard {i}/3: encoded" in capsys.readouterr().out
        assert not (out / "manifest.csv").exists()  # nothing to train on until the merge
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"shard-{i}-of-3.json" for i in range(3)]
    assert main(["merge", str(out)]) == 0
    assert "merged 3 shards: 5 subjects" in capsys.readouterr().out
    assert_same_store(out, single)
    # a finished shard is not run again
    record = shard_path(out, Shard(1, 3))
    mtime = record.stat().st_mtime_ns
    assert main([str(scans), "--out", str(out), *ARGS, "--shard", "1/3"]) == 0
    assert "already finished, kept" in capsys.readouterr().out and record.stat().st_mtime_ns == mtime


def test_duplicates_and_bad_files_with_skip_merge_like_one_process(scans, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(scans, src)
    raw = (src / "mni152.nii.gz").read_bytes()
    (src / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    table = tmp_path / "subjects.csv"
    names = sorted(p.name for p in src.iterdir())
    table.write_text("path,subject\n" + "".join(f"in/{n},{'dup' if 'mni' in n else n}\n" for n in names))
    items = collect_inputs(table)
    one = encode_dataset(items, tmp_path / "one", identity(), FAST_PRE, on_error="skip", progress=False)
    assert len(one.errors) == 2  # the second "dup" and the truncated file
    for i in range(2):
        encode_shard(items, tmp_path / "sharded", identity(), FAST_PRE, Shard(i, 2), on_error="skip", progress=False)
    merge_store(tmp_path / "sharded")
    assert_same_store(tmp_path / "sharded", tmp_path / "one")
    with pytest.raises(DataError, match="duplicate subject id 'dup'"):  # stop: refused before anything is encoded
        encode_shard(items, tmp_path / "stop", identity(), FAST_PRE, Shard(1, 2), progress=False)
    assert not (tmp_path / "stop" / "latents").exists() or not list((tmp_path / "stop" / "latents").iterdir())


def test_a_shard_killed_mid_way_is_redone_and_keeps_its_latents(scans, single, tmp_path, monkeypatch):
    import neuromf.data.store as store

    items = collect_inputs(scans)
    out = tmp_path / "store"
    encode_shard(items, out, identity(), FAST_PRE, Shard(0, 2), progress=False)
    real_save, calls = store.save_file, []

    def dies_on_second_latent(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(store, "save_file", dies_on_second_latent)
    with pytest.raises(KeyboardInterrupt):
        encode_shard(items, out, identity(), FAST_PRE, Shard(1, 2), progress=False)
    monkeypatch.setattr(store, "save_file", real_save)
    assert not shard_path(out, Shard(1, 2)).exists()  # no record: the shard did not finish
    with pytest.raises(DataError, match=r"1 of 2 shards not finished \(1\)"):
        merge_store(out)
    assert main(["merge", str(out)]) == 2
    first_of_shard1 = out / "latents" / "anatomical_b.safetensors"  # inputs sorted; shard 1 holds 1, 3
    mtime = first_of_shard1.stat().st_mtime_ns
    shard0 = shard_path(out, Shard(0, 2)).stat().st_mtime_ns
    again = encode_shard(items, out, identity(), FAST_PRE, Shard(1, 2), progress=False)
    assert again.ran and (again.record["kept"], again.record["encoded"]) == (1, 1)
    assert first_of_shard1.stat().st_mtime_ns == mtime
    assert not encode_shard(items, out, identity(), FAST_PRE, Shard(0, 2), progress=False).ran
    assert shard_path(out, Shard(0, 2)).stat().st_mtime_ns == shard0
    merge_store(out)
    assert_same_store(out, single)


def test_merge_refuses_what_does_not_add_up(scans, tmp_path, capsys):
    items = collect_inputs(scans)
    out = tmp_path / "store"
    for i in range(2):
        encode_shard(items, out, identity(), FAST_PRE, Shard(i, 2), progress=False)
    # other settings for a finished shard: refused like a latent of other settings
    with pytest.raises(DataError, match="shard-0-of-2.json: shard encoded with different"):
        other = IdentityEncoder(latent_shape=(8, 8, 8), image_shape=FAST_PRE.shape)
        encode_shard(items, out, other, FAST_PRE, Shard(0, 2), progress=False)
    # a shard of other inputs (a file added since)
    record = shard_path(out, Shard(1, 2))
    saved = record.read_text()
    rec = json.loads(saved)
    record.write_text(json.dumps({**rec, "inputs_hash": "0" * 16}))
    with pytest.raises(DataError, match="shard-1-of-2.json: inputs_hash"):
        merge_store(out)
    record.write_text(saved)
    # records of two shard counts: say which
    encode_shard(items, out, identity(), FAST_PRE, Shard(0, 3), progress=False)
    with pytest.raises(DataError, match=r"records of \[2, 3\] shards; pass --shards N"):
        merge_store(out)
    # a latent that went missing or was damaged after its shard finished
    latent = out / "latents" / "head.safetensors"
    latent.write_bytes(latent.read_bytes()[:100])
    assert main(["merge", str(out), "--shards", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "head.safetensors" in err and len(err.splitlines()) == 1
    assert not (out / "manifest.csv").exists()  # nothing written on a refused merge
    encode_shard(items, out, identity(), FAST_PRE, Shard(0, 2), force=True, progress=False)
    merge_store(out, 2)


def test_shard_and_shards_together_and_bad_launcher_input(scans, tmp_path, capsys):
    assert main([str(scans), "--out", str(tmp_path / "o"), *ARGS, "--shard", "0/2", "--shards", "2"]) == 2
    assert "--shard and --shards" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *ARGS, "--shards", "2"]) == 2
    assert "not a folder of NIfTI files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(scans), "--out", str(tmp_path / "o"), "--shard", "3/2"])
    assert e.value.code == 2


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in out and "(default 1.0)" not in out and "(default: [])" not in out
    assert "seed for --sample (default: 0)" in out  # a zero default is still shown
    assert "1/std of the latents (default: 1.0)" in out
    assert "--shards" in out and "--launcher" in out and "merge STORE" in out and "check STORE" in out


def _sharded_cli(scans: Path, out: Path, launcher: list[str], cwd: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "neuromf.encode", str(scans), "--out", str(out), *ARGS, "--shards", "2", *launcher]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)


def _died_then_redone(scans, single, tmp_path, launcher: list[str]):
    """A shard job that fails (an input it reads is damaged) fails the command, naming the file; the same command
    again, the file repaired, runs only that shard and merges a store equal to one process's."""
    src = tmp_path / "in"
    shutil.copytree(scans, src)
    good = (src / "head.nii.gz").read_bytes()  # sorted inputs: index 2 -> shard 0 of 2
    (src / "head.nii.gz").write_bytes(good[: len(good) // 3])
    out = tmp_path / "store"
    first = _sharded_cli(src, out, launcher, tmp_path)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "error: shard 0/2 failed" in first.stderr and "head.nii.gz" in first.stderr, first.stderr
    assert "finished shards are kept" in first.stderr
    assert shard_path(out, Shard(1, 2)).is_file() and not shard_path(out, Shard(0, 2)).exists()
    kept = shard_path(out, Shard(1, 2)).stat().st_mtime_ns
    (src / "head.nii.gz").write_bytes(good)
    second = _sharded_cli(src, out, launcher, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 2 shards already finished (kept); running 1" in second.stdout
    assert "merged 2 shards: 5 subjects" in second.stdout
    assert shard_path(out, Shard(1, 2)).stat().st_mtime_ns == kept
    for a, b in zip(read_csv(out / "manifest.csv"), read_csv(single / "manifest.csv"), strict=True):
        assert {k: v for k, v in a.items() if k != "source_path"} == {k: v for k, v in b.items() if k != "source_path"}
    return out


@pytest.mark.slow
def test_local_processes_shard_died_is_redone(scans, single, tmp_path):
    out = _died_then_redone(scans, single, tmp_path, ["--launcher", "local", "--timeout-min", "10"])
    assert (out / ".submitit").is_dir()


@pytest.mark.integration
@pytest.mark.slow
def test_slurm_array_shard_died_is_redone(slurm_cluster, scans, single, tmp_path):
    launcher = ["--launcher", "slurm", "--partition", slurm_cluster, "--timeout-min", "10"]
    launcher += ["--cpus-per-task", "1", "--mem-gb", "2"]
    out = _died_then_redone(scans, single, tmp_path, launcher)
    tasks = sorted(p.name for p in (out / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 2 and tasks[0].endswith("_0") and tasks[1].endswith("_1")  # one array: <job>_<task>
    # each shard records the SLURM job that finished it: the first array's task for shard 1, a second job for 0
    first, second = (json.loads(shard_path(out, Shard(i, 2)).read_text())["slurm_job_id"] for i in (1, 0))
    assert first == tasks[0].split("_")[0] and second not in (None, first)


# ------------------------------------------------------------------ the store check


def test_check_decodes_latents_next_to_their_sources(tmp_path, capsys):
    src = real_t1_folder(tmp_path / "in")
    pre = PreprocessConfig(spacing=(4.0,) * 3, shape=(48, 48, 48), percentiles=(0.5, 99.5))
    enc = IdentityEncoder(latent_shape=None, image_shape=pre.shape)  # decode = the preprocessed image itself
    encode_dataset(collect_inputs(src), tmp_path / "store", enc, pre, progress=False)
    assert main(["check", str(tmp_path / "store"), "--n", "2", "--out", str(tmp_path / "check.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'store'}: 2 subjects, identity latents [1, 48, 48, 48]")
    for line, subject in zip(out[1:3], ("anatomical", "mni152"), strict=True):
        assert line.startswith(f"{subject}: decoded 48x48x48") and "correlation 1.000" in line
        assert "same grid" in line and "⚠" not in line
    assert out[3] == f"wrote {tmp_path / 'check.png'}" and len(out) == 4
    from PIL import Image

    with Image.open(tmp_path / "check.png") as im:
        assert im.size[0] > 2 * im.size[1]  # 2 rows of 6 panels
        assert np.asarray(im.convert("L")).std() > 20  # brains, not a blank canvas

    # a latent stored upside down (an orientation error) is flagged
    path = tmp_path / "store" / "latents" / "mni152.safetensors"
    z, affine = read_latent(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    write_latent(path, z.flip(3), affine, meta)
    assert main(["check", str(tmp_path / "store"), "--subjects", "mni152"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "⚠ low" in line and (tmp_path / "store" / "check.png").is_file()


def test_check_refuses_unknown_subjects_and_missing_store(tmp_path, capsys):
    src = real_t1_folder(tmp_path / "in")
    encode_dataset(collect_inputs(src), tmp_path / "store", identity(), FAST_PRE, progress=False)
    assert main(["check", str(tmp_path / "store"), "--subjects", "nobody"]) == 2
    assert "unknown subjects ['nobody']" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "none")]) == 2
    assert "manifest.csv: manifest not found" in capsys.readouterr().err
