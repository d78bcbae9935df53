"""Training-step benchmark: flow matching vs MeanFlow vs iMF (each JVP strategy) on MeanFlowUNet.

    python -m neuromf.bench --preset cpu-small|maisi [--batch 8] [--dtype bf16|fp32] [--steps 10] [--warmup 3]
        [--strategies fm,meanflow,imf,jvp_only] [--jvp exact,fd,exact_fused] [--compile] [--channels-last]
        [--checkpointing] [--optimizer] [--baseline other.json ...] [--out benchmarks/<name>.json]
    python -m neuromf.bench --check a.json b.json ... [--out benchmarks/<name>.json]
        (re-checks the step-time targets of finished runs against the fastest FM step among them, no timing)
    python -m neuromf.bench --cost --preset cpu-small|maisi [--bf16-size 16] [--out benchmarks/cost_<preset>.json]
        (GPU-free FLOP / saved-byte counts and the largest batch per GPU size: neuromf/bench/cost.py)

A step = objective + backward (+ AdamW step with --optimizer) of the real engine (MeanFlowObjective on
MeanFlowUNet); the flow-matching baseline is |u(z_t, t, t) - v|^2 forward + backward on the same network.
`imf` is iMF with the v-head's loss on the u pass (loss.imf_v_loss=shared, the default), `imf_separate` the
former form (a v-head pass with its graph). `jvp_only` times torch.func.jvp alone under no_grad.
Timing: CUDA events (or perf_counter on CPU) after warm-up, median of `steps`. Memory:
torch.cuda.max_memory_allocated per case (CUDA only) and, on every device, the bytes of tensors saved for backward by
one step (autograd saved-tensor hooks, deduplicated by storage).
Achieved TFLOP/s per case: the FLOPs of one step counted with FlopCounterMode (neuromf.training.budget.count_flops, the
eager step's FLOPs: a compiled function runs eagerly under the counter) / the median step time.
Step-time targets: MeanFlow <= 1.5x and iMF <= 2.0x the *fastest* FM step measured, compiled or eager: a
`--compile` run also times the eager FM step (`fm_eager`, on an uncompiled copy of the network), `--baseline` adds the
FM rows of other runs (same device, preset, batch, dtype) and `--check` re-checks finished runs against each other.
An out-of-memory case is recorded as "OOM". Prints a table and writes JSON (ratios to the flow-matching step).
Latents: (B, C, D, H, W).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromf.bench.cases import run
from neuromf.bench.cost import COST_KINDS, run_cost
from neuromf.bench.formatting import fmt_value, format_cost_table, format_table
from neuromf.bench.presets import PRESETS, STRATEGIES
from neuromf.bench.targets import check_runs
from neuromf.io_atomic import write_json_atomic
from neuromf.meanflow.jvp import JVP_STRATEGIES


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m neuromf.bench", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    p.add_argument("--batch", type=int, default=None, help="default: the preset's (maisi 8, cpu-small 2)")
    p.add_argument(
        "--dtype",
        choices=["bf16", "fp32"],
        default=None,
        help="bf16 = autocast(bfloat16) with float32 weights; fp32 uses TF32 on CUDA unless --no-tf32",
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--strategies",
        default=None,
        help="default fm,meanflow,imf,jvp_only (with --cost: fm,meanflow,imf,imf_separate,alphaflow,splitmeanflow)",
    )
    p.add_argument("--jvp", default="exact,fd,exact_fused")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the JVP step and the forwards (GroupNorm decomposed first)",
    )
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default, max-autotune, ...)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument(
        "--checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="non-reentrant gradient checkpointing of the UNet blocks",
    )
    p.add_argument("--optimizer", action=argparse.BooleanOptionalAction, default=False, help="include an AdamW step")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--flash-attention",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="MAISI's SDPA attention (its forward-mode derivative falls back to the math path)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (written atomically)")
    p.add_argument(
        "--flops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count each case's FLOPs (one more step under FlopCounterMode) for the achieved TFLOP/s",
    )
    p.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        metavar="JSON",
        help="bench JSONs whose FM rows (same device and settings) join this run's as the FM step to beat",
    )
    p.add_argument(
        "--check",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no run: re-check the targets of these bench JSONs against the fastest FM step among them",
    )
    p.add_argument("--cost", action="store_true", help="count FLOPs / saved bytes (no timing) and fit the batch")
    p.add_argument(
        "--bf16-size", type=int, default=None, help="--cost: cube edge of the bf16 ratio count (0: skip bf16)"
    )
    args = p.parse_args(argv)
    if args.strategies is None:
        args.strategies = ",".join(COST_KINDS) if args.cost else "fm,meanflow,imf,jvp_only"
    if args.cost and "--batch" not in (argv if argv is not None else sys.argv[1:]):
        args.batch = 1
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.dtype = args.dtype or preset["dtype"]
    args.strategies, args.jvp = _csv(args.strategies), _csv(args.jvp)
    for s in args.strategies:
        allowed = tuple(dict.fromkeys((*STRATEGIES, *COST_KINDS))) if args.cost else STRATEGIES  # every objective
        if s not in allowed:
            p.error(f"--strategies: {s!r} is not one of {allowed}")
    for j in args.jvp:
        if j not in JVP_STRATEGIES:
            p.error(f"--jvp: {j!r} is not one of {JVP_STRATEGIES}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        payload = check_runs(args.check)
        for run_ in payload["runs"]:
            print(f"{run_['source']}\n{format_table(run_['results'])}")
        best = payload["fm_baseline"]
        if best is not None:
            print(f"fastest FM step: {best['ms_median']:.1f} ms ({best['source']}: {best['case']})")
        for case, v in payload["targets"]["checks"].items():
            verdict = "ok" if v["ms_ratio_ok"] else "MISSED"
            ratio = fmt_value(v["ms_ratio_to_best_fm"], "5.2f")
            print(f"  {case}: {ratio}x the fastest FM step (<= {v['ms_ratio_max']}) {verdict}")
        if args.out:
            write_json_atomic(Path(args.out), payload)
            print(f"wrote {args.out}")
        return 0
    if args.cost:
        payload = run_cost(args, PRESETS)
        cfg = payload["config"]
        print(
            f"{payload['device']} | torch {payload['torch']} | {args.preset} {cfg['latent_shape']}"
            f" | params {cfg['params']}"
        )
        print(format_cost_table(payload["results"]))
        if args.out:
            write_json_atomic(Path(args.out), payload)
            print(f"wrote {args.out}")
        return 0
    payload = run(args, on_update=(lambda p: write_json_atomic(Path(args.out), p)) if args.out else None)
    best = payload["fm_baseline"]
    print(
        f"{payload['device']} | torch {payload['torch']} | {args.preset} batch {args.batch} {args.dtype}"
        f"{' compile' if args.compile else ''}{' channels-last' if args.channels_last else ''}"
        f"{' checkpointing' if args.checkpointing else ''} | params {payload['config']['params_m']}"
    )
    print(format_table(payload["results"]))
    if best is not None:
        print(
            f"x best: ratio to the fastest FM step, {best['ms_median']:.1f} ms ({best['source']}: {best['case']};"
            f" FM measured: {', '.join(best['measured'])})"
        )
    if args.out:
        write_json_atomic(Path(args.out), payload)
        print(f"wrote {args.out}")
    return 0
