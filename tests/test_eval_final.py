"""python -m neuromf.evaluate: the selected checkpoint of a run scored on its test split (pieces and end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuromf.evaluate import (
    EvaluationInputError,
    HeldOutTestData,
    main,
    read_test_split,
    run_dirs,
    selected_checkpoint,
)


def _ckpts(run: Path, *names: str) -> None:
    (run / "checkpoints").mkdir(parents=True)
    for n in names:
        (run / "checkpoints" / n).write_bytes(b"")


def test_the_checkpoint_at_the_objectives_best_step_is_selected(tmp_path):
    run = tmp_path / "run"
    _ckpts(run, "best-001-000004.ckpt", "best-002-000006.ckpt", "last.ckpt")
    (run / "status.json").write_text(json.dumps({"best_step": 4}))
    assert selected_checkpoint(run) == (run / "checkpoints" / "best-001-000004.ckpt", 4, None)
    # no status.json best_step: the evaluation summary's best step of the objective
    (run / "status.json").write_text("{}")
    (run / "eval").mkdir()
    summary = {"objective_key": "val/swd/nfe1", "best": {"val/swd/nfe1": {"value": 0.5, "epoch": 2, "step": 6}}}
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    assert selected_checkpoint(run)[:2] == (run / "checkpoints" / "best-002-000006.ckpt", 6)


def test_without_the_selected_checkpoint_last_is_evaluated_with_a_note(tmp_path):
    run = tmp_path / "run"
    _ckpts(run, "best-001-000004.ckpt", "last.ckpt")
    (run / "status.json").write_text(json.dumps({"best_step": 8}))  # its best-k file was rotated away
    path, step, note = selected_checkpoint(run)
    assert path.name == "last.ckpt" and step is None and "best step 8" in note and "last.ckpt" in note
    _ckpts(tmp_path / "other", "last.ckpt")
    assert "no best-*.ckpt" in selected_checkpoint(tmp_path / "other")[2]
    (tmp_path / "none" / "checkpoints").mkdir(parents=True)
    with pytest.raises(EvaluationInputError, match=str(tmp_path / "none" / "checkpoints")):
        selected_checkpoint(tmp_path / "none")


def test_a_run_needs_a_test_split_of_two_subjects(tmp_path):
    with pytest.raises(EvaluationInputError, match=f"{tmp_path / 'split.json'}: no such file"):
        read_test_split(tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c"]}))
    with pytest.raises(EvaluationInputError, match="test split has 1 subject"):
        read_test_split(tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c", "d"]}))
    assert read_test_split(tmp_path) == ["c", "d"]


def test_run_and_sweep_dirs(tmp_path):
    (tmp_path / "s" / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "s" / "1" / ".hydra").mkdir(parents=True)
    assert run_dirs(tmp_path / "s") == [tmp_path / "s" / "0", tmp_path / "s" / "1"]
    assert run_dirs(tmp_path / "s" / "1") == [tmp_path / "s" / "1"]
    with pytest.raises(EvaluationInputError, match="no such run or sweep dir"):
        run_dirs(tmp_path / "missing")


def test_the_reference_set_is_the_test_split(demo_latents):
    from neuromf.data import LatentDataModule

    dm = LatentDataModule(latent_dir=str(demo_latents))
    dm.setup()
    view = HeldOutTestData(dm)
    test = view.val_latents()
    assert test.shape == (len(dm.splits["test"]), *dm.latent_shape)
    assert torch.equal(test, torch.stack([dm.dataset("test")[i] for i in range(len(dm.splits["test"]))]))
    assert not set(dm.splits["test"]) & set(dm.splits["val"])
    assert view.latent_shape == dm.latent_shape and view.decode == dm.decode  # the rest is the datamodule's


@pytest.mark.parametrize("case", ["missing", "no_checkpoint", "no_split"])
def test_bad_input_is_one_line_naming_the_path_exit_2(tmp_path, capsys, case):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\ndata: {batch_size: 2}\nmodel: {in_channels: 1}\n")
    (run / "eval").mkdir()
    (run / "eval" / "final.json").write_text('{"metrics": {}}')  # an earlier result: must survive
    if case != "no_split":
        (run / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c", "d"]}))
    if case != "no_checkpoint":
        _ckpts(run, "last.ckpt")
    target = tmp_path / "nope" if case == "missing" else run
    assert main([str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    named = {"missing": tmp_path / "nope", "no_checkpoint": run / "checkpoints", "no_split": run / "split.json"}
    assert len(err) == 1 and err[0].startswith("error: ") and str(named[case]) in err[0]
    assert (run / "eval" / "final.json").read_text() == '{"metrics": {}}'


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory):
    """A sweep dir with one tiny run (3 epochs of 2 steps, an evaluation per epoch: val/swd/nfe1 the objective,
    best-k checkpoints) and one failed run."""
    from hydra import compose, initialize_config_dir
    from training_helpers import CONF, TINY

    from neuromf.data.demo import ensure_demo
    from neuromf.train import train

    ensure_demo("small")
    sd = tmp_path_factory.mktemp("sweep")
    overrides = [o for o in TINY if not o.startswith("eval=")] + [
        "eval.num_samples=4", "eval.nfe_list=[1,2]", "eval.feat3d_enabled=false", "eval.msssim_enabled=false",
        "eval.swd_projections=16", f"eval.cache_dir={sd / 'cache'}", "objective=val/swd/nfe1", "trainer.max_epochs=3",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "data.batch_size=2", "torch_threads=1",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF):
        train(compose(config_name="train", overrides=overrides), sd / "0")
    (sd / "1" / ".hydra").mkdir(parents=True)
    (sd / "1" / "status.json").write_text(json.dumps({"status": "failed", "reason": "boom"}))
    return sd


@pytest.mark.slow
def test_end_to_end_the_selected_checkpoint_on_the_test_split(trained_sweep, capsys):
    """Known answer: final.json's test/swd/nfe1 is the SWD, recomputed here, between the selected checkpoint's EMA
    1-step samples of the 16 seeded noises (4x eval.num_samples) and the run's test latents, not the validation
    ones; the report shows it in the final table beside the selection."""
    from omegaconf import OmegaConf

    from neuromf.data.datamodule import datamodule_for_run
    from neuromf.evaluation import sliced_wasserstein
    from neuromf.meanflow import sample
    from neuromf.report import build_report
    from neuromf.tracking.checkpoint_network import load_network
    from neuromf.tracking.metrics import read_config

    run = trained_sweep / "0"
    assert main([str(trained_sweep)]) == 0  # the failed run is skipped with a line
    out = capsys.readouterr()
    assert f"skipped {trained_sweep / '1'}: status failed" in out.err and str(run / "eval" / "final.json") in out.out
    final = json.loads((run / "eval" / "final.json").read_text())
    status = json.loads((run / "status.json").read_text())
    assert final["checkpoint"] == str(next((run / "checkpoints").glob(f"best-*-{status['best_step']:06d}.ckpt")))
    assert final["num_samples"] == 16 and final["nfe_list"] == [1, 2] and final["split"] == "test"
    assert final["selection"]["value"] == pytest.approx(status["objective"]) and final["note"] is None
    assert {"test/swd/nfe1", "test/swd/nfe2", "test/swd_patch/nfe1"} <= set(final["metrics"])
    assert set(final["reference"]["swd"]) == {"real", "collapsed", "noise"}

    net, _ = load_network(final["checkpoint"], use_ema=True)
    dm = datamodule_for_run(OmegaConf.create(read_config(run)), run)  # as trained: the run's split.json
    dm.setup()
    noise = torch.randn(16, *dm.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = torch.cat([sample(net, noise[i : i + 8], 1) for i in (0, 8)]).float()
    on_test = float(sliced_wasserstein(fake, dm.test_latents(), num_projections=16, seed=0))
    on_val = float(sliced_wasserstein(fake, dm.val_latents(), num_projections=16, seed=0))
    assert final["metrics"]["test/swd/nfe1"] == pytest.approx(on_test, rel=1e-5)
    assert abs(on_test - on_val) > 1e-4  # the test split, not the validation set, is the reference

    md = (build_report([trained_sweep], out=trained_sweep / "report")["out"] / "report.md").read_text()
    table = md.split("## Final evaluation (test split)")[1].split("\n## ")[0]
    assert "selection: val val/swd/nfe1" in table and "test/swd/nfe1" in table
    assert f"{final['metrics']['test/swd/nfe1']:.4g} (n = 1: no statistics)" in table


@pytest.mark.slow
def test_test_subjects_missing_from_the_store_are_one_line_exit_2(trained_sweep, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_sweep / "0", run)
    split = json.loads((run / "split.json").read_text())
    split["test"] = ["no_such_subject_a", "no_such_subject_b"]
    (run / "split.json").write_text(json.dumps(split))
    before = sorted(p.name for p in (run / "eval").iterdir())
    assert main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(run / "split.json") in err[0]
    assert sorted(p.name for p in (run / "eval").iterdir()) == before  # nothing written
