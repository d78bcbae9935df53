"""`python -m neuromf.sample` argument checks: a bad --n, --nfe or --out is one error line (exit 2), before the
checkpoint is read and before anything is created."""

from __future__ import annotations

import pytest

from neuromf.sample import main


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n", "0"], "error: --n 0: the number of samples must be >= 1"),
        (["--n", "-1"], "error: --n -1: the number of samples must be >= 1"),
        (["--nfe", "0"], "error: --nfe 0: the number of sampling steps must be >= 1"),
        (["--nfe", "-3"], "error: --nfe -3: the number of sampling steps must be >= 1"),
    ],
)
def test_a_bad_count_is_one_line_and_creates_nothing(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"not read")
    assert main([str(ckpt), *args]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # no samples/ folder


def test_an_out_that_is_a_file_is_one_line_and_the_file_is_kept(tmp_path, capsys):
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    for target in (out, out / "sub"):
        assert main([str(tmp_path / "missing.ckpt"), "--out", str(target)]) == 2
        assert capsys.readouterr().err.splitlines() == [f"error: --out {target}: {out} exists and is not a directory"]
    assert out.read_text() == "keep me"
