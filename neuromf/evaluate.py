"""`python -m neuromf.evaluate <run or sweep dir> [--num-samples N] [--nfe 1 2 ...]`: the final evaluation.

The objective is the best of several validation passes on one set, so it is optimistic. This scores each run's
checkpoint that the objective selected (``best-*.ckpt`` at the objective's best step; ``last.ckpt`` with a note
when there is none) once on the run's held-out TEST split (``<run>/split.json``, never read in training), with
more samples than validation (default 4x ``eval.num_samples``) at every step count of the run's ``eval.nfe_list``,
through the same EvaluationCallback and MetricSuite as validation. Results go to ``<run>/eval/final.json``
(atomically): ``metrics`` as ``test/<metric>/nfe<N>``, the test-set reference levels, the checkpoint and the
selection (the validation objective). ``python -m neuromf.report`` shows them as its final table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from neuromf.evaluation.registry import DEFAULT_OBJECTIVE
from neuromf.io_atomic import write_json_atomic
from neuromf.run_dir import RunDir
from neuromf.tracking.metrics import find_run_dirs, read_config
from neuromf.tracking.redact import redact_text

SAMPLE_FACTOR = 4  # default test samples per step count: this many times the validation's eval.num_samples
_BEST = re.compile(r"^best-(\d+)-(\d+)\.ckpt$")  # train.py: best-{epoch:03d}-{step:06d}.ckpt


class EvaluationInputError(ValueError):
    """A path that cannot be evaluated: one line naming it (exit 2)."""


def run_dirs(path: Path) -> list[Path]:
    """[path] for a run dir (it has .hydra/), its run dirs for a sweep dir; EvaluationInputError otherwise."""
    if not path.is_dir():
        raise EvaluationInputError(f"{path}: no such run or sweep dir")
    if RunDir(path).hydra.is_dir():
        return [path]
    runs = find_run_dirs(path)
    if not runs:
        raise EvaluationInputError(f"{path}: neither a run dir (.hydra/) nor a sweep dir of run dirs")
    return runs


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def selected_checkpoint(run_dir: Path) -> tuple[Path, int | None, str | None]:
    """(checkpoint, its global step or None, note or None): the best-*.ckpt written at the step where the
    objective was best (status.json ``best_step``, else eval/summary.json), else last.ckpt with a note."""
    run = RunDir(run_dir)
    ckpt_dir = run.checkpoints
    best = {int(m.group(2)): p for p in ckpt_dir.glob("best-*.ckpt") if (m := _BEST.match(p.name))}
    summary = _json(run.eval_summary)
    step = _json(run.status).get("best_step")
    if step is None:
        step = ((summary.get("best") or {}).get(summary.get("objective_key") or "") or {}).get("step")
    if step is not None and int(step) in best:
        return best[int(step)], int(step), None
    last = run.last_checkpoint
    if not last.is_file():
        raise EvaluationInputError(f"{ckpt_dir}: no checkpoint (best-*.ckpt or last.ckpt) to evaluate")
    why = "no best-*.ckpt" if not best else f"no best-*.ckpt at the objective's best step {step}"
    return last, None, f"{why}: evaluated last.ckpt, not the checkpoint the objective selected"


def read_test_split(run_dir: Path) -> list[str]:
    """The run's test subjects from <run>/split.json; EvaluationInputError naming the file when there are < 2."""
    path = RunDir(run_dir).split
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such file: the run has no recorded train/val/test split")
    data = _json(path)
    test = data.get("test")
    if not isinstance(test, list) or len(test) < 2:
        n = len(test) if isinstance(test, list) else 0
        raise EvaluationInputError(f"{path}: the test split has {n} subject(s); the evaluation needs >= 2")
    return [str(s) for s in test]


class HeldOutTestData:
    """A LatentDataModule seen by the EvaluationCallback with the TEST split as its reference set: val_latents()
    returns the test latents (N, C, D, H, W); everything else (decode, train_latents, ...) is the datamodule's."""

    def __init__(self, dm):
        self._dm = dm

    def __getattr__(self, name):
        return getattr(self._dm, name)

    def val_latents(self) -> torch.Tensor:
        return self._dm.test_latents()


class CheckpointSampler:
    """What the EvaluationCallback calls on a LightningModule: ``device`` and ``generate(noise, nfe, use_ema)``,
    here the network of a checkpoint (its EMA or trained weights, chosen when it was loaded)."""

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net, self.device = net, device

    @torch.no_grad()
    def generate(self, noise: torch.Tensor, nfe: int = 1, use_ema: bool | None = None) -> torch.Tensor:
        from neuromf.meanflow import sample

        return sample(self.net, noise.to(self.device), nfe)


def eval_settings(cfg: dict) -> tuple[dict, str | None]:
    """The run's evaluation config (its ``eval`` group minus ``enabled``), or conf/eval/default.yaml resolved
    with the run's objective and EMA setting when the run had none (eval=none), with a note."""
    ev = {k: v for k, v in (cfg.get("eval") or {}).items() if k != "enabled"}
    if ev:
        return ev, None
    from omegaconf import OmegaConf

    default = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "eval" / "default.yaml")
    ev = {k: v for k, v in OmegaConf.to_container(default, resolve=False).items() if k != "enabled"}
    ev |= {
        "use_ema": (cfg.get("callbacks") or {}).get("ema_inference", True),
        "objective_key": cfg.get("objective", DEFAULT_OBJECTIVE),
        "objective_mode": cfg.get("objective_mode", "min"),
    }
    return ev, "the run had no evaluation config (eval=none): conf/eval/default.yaml settings"


def prepare(run_dir: Path) -> dict:
    """Everything checked before anything is computed or written: config, test split, checkpoint."""
    cfg = read_config(run_dir)
    if not cfg.get("data") or not cfg.get("model"):
        raise EvaluationInputError(f"{RunDir(run_dir).config}: no composed training config (data, model)")
    subjects = read_test_split(run_dir)
    ckpt, step, note = selected_checkpoint(run_dir)
    ev, ev_note = eval_settings(cfg)
    notes = [n for n in (note, ev_note) if n]
    return {"cfg": cfg, "subjects": subjects, "checkpoint": ckpt, "step": step, "notes": notes, "eval": ev}


def evaluate_run(
    run_dir: Path,
    num_samples: int | None = None,
    nfe_list: list[int] | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    prepared: dict | None = None,
) -> dict:
    """Score the run's selected checkpoint on its test split; writes and returns <run>/eval/final.json's content."""
    from omegaconf import OmegaConf

    from neuromf.data.datamodule import datamodule_for_run
    from neuromf.data.io import DataError
    from neuromf.evaluation.callback import EvaluationCallback
    from neuromf.tracking.checkpoint_network import CheckpointError, load_network

    run = RunDir(run_dir)
    p = prepared or prepare(run_dir)
    cfg, ev = p["cfg"], dict(p["eval"])
    ev["num_samples"] = int(num_samples or SAMPLE_FACTOR * int(ev.get("num_samples", 16)))
    if nfe_list:
        ev["nfe_list"] = [int(n) for n in nfe_list]
    if batch_size:
        ev["batch_size"] = int(batch_size)
    use_ema = ev.get("use_ema")
    try:
        net, _ = load_network(p["checkpoint"], use_ema=use_ema is not False, device=device)
    except CheckpointError as err:
        raise EvaluationInputError(str(err)) from err
    try:
        dm = datamodule_for_run(OmegaConf.create(cfg), run_dir)  # run_dir: the split is read from its split.json
        dm.prepare_data()
        dm.setup("test")
    except DataError as err:  # e.g. test subjects of split.json missing from the latent store
        raise EvaluationInputError(f"{run.split}: {err}") from err
    if list(dm.splits["test"]) != p["subjects"]:
        raise EvaluationInputError(f"{run.split}: the datamodule's test split differs from the file")
    callback = EvaluationCallback(output_dir=str(run.eval), **ev)
    module = CheckpointSampler(net, torch.device(device))
    trainer = SimpleNamespace(datamodule=HeldOutTestData(dm), callbacks=[])
    callback.setup(trainer, module, "fit")  # builds the feature extractors (deepbet, FID) as in training
    t0 = time.perf_counter()
    values = callback.evaluate(trainer, module, epoch=0)
    seconds = time.perf_counter() - t0
    metrics = {"test/" + k.split("/", 1)[1]: v for k, v in values.items() if re.search(r"/nfe\d+$", k)}
    reference: dict[str, dict[str, float]] = {}
    for k, v in callback.reference.items():  # ref/<metric>/<level>, against the test set
        _, metric, level = k.split("/")
        reference.setdefault(metric, {})[level] = v
    status = _json(run.status)
    result = {
        "split": "test",
        "split_file": str(run.split),
        "num_test": len(p["subjects"]),
        "checkpoint": str(p["checkpoint"]),
        "checkpoint_step": p["step"],
        "note": "; ".join(p["notes"]) or None,
        "selection": {
            "objective_key": cfg.get("objective"),
            "objective_mode": cfg.get("objective_mode"),
            "value": status.get("objective"),
            "best_step": status.get("best_step"),
        },
        "num_samples": ev["num_samples"],
        "nfe_list": list(callback.nfe_list),
        "use_ema": use_ema is not False,
        "metrics": metrics,
        "reference": reference,
        "seconds": round(seconds, 3),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": callback.config(),
    }
    write_json_atomic(run.eval_final, result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m neuromf.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("path", type=Path, help="a run dir (<run>/.hydra) or a sweep dir of run dirs")
    ap.add_argument("--num-samples", type=int, default=None,
                    help=f"samples per step count (default {SAMPLE_FACTOR}x the run's eval.num_samples)")  # fmt: skip
    ap.add_argument("--nfe", type=int, nargs="+", default=None, help="step counts (default: the run's eval.nfe_list)")
    ap.add_argument("--batch-size", type=int, default=None, help="generation batch (default: eval.batch_size)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    bad = next((f"--{n} {v}: must be >= 1" for n, v in (("num-samples", args.num_samples), ("batch-size",
               args.batch_size), *(("nfe", x) for x in args.nfe or [])) if v is not None and v < 1), None)  # fmt: skip
    try:
        if bad:
            raise EvaluationInputError(bad)
        runs = run_dirs(args.path)
        single = len(runs) == 1 and runs[0] == args.path
        ready, failed = [], 0
        for run in runs:  # every check before anything is computed or written
            status = _json(RunDir(run).status).get("status")
            if not single and status not in ("completed", None):
                print(f"skipped {run}: status {status}", file=sys.stderr)
                continue
            try:
                ready.append((run, prepare(run)))
            except (EvaluationInputError, ValueError) as err:
                if single:
                    raise
                print(f"error: {redact_text(str(err))}", file=sys.stderr)
                failed += 1
        if not ready:
            raise EvaluationInputError(f"{args.path}: no run to evaluate")
        for run, prepared in ready:
            res = evaluate_run(run, args.num_samples, args.nfe, args.device, args.batch_size, prepared)
            base = (str(res["selection"]["objective_key"]).split("/") + [""])[1]  # val/<base>/nfeN
            shown = ", ".join(f"{k} {v:.4g}" for k, v in res["metrics"].items() if k.split("/")[1] == base)
            print(f"{run}: {res['num_samples']} samples x NFE {res['nfe_list']} on {res['num_test']} test subjects"
                  f"{': ' + shown if shown else ''} -> {RunDir(run).eval_final}")  # fmt: skip
            if res["note"]:
                print(f"note: {run}: {res['note']}", file=sys.stderr)
    except EvaluationInputError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
