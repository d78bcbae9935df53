"""Training-step benchmark: flow matching vs MeanFlow vs iMF (each JVP strategy) on MeanFlowUNet.

    python -m neuromf.bench --preset cpu-small|maisi [--batch 8] [--dtype bf16|fp32] [--steps 10] [--warmup 3]
        [--strategies fm,meanflow,imf,jvp_only] [--jvp exact,fd,exact_fused] [--compile] [--channels-last]
        [--checkpointing] [--optimizer] [--baseline other.json ...] [--out benchmarks/<name>.json]
    python -m neuromf.bench --check a.json b.json ... [--out benchmarks/<name>.json]
        (re-checks the step-time targets of finished runs against the fastest FM step among them, no timing)
    python -m neuromf.bench --cost --preset cpu-small|maisi [--bf16-size 16] [--out benchmarks/cost_<preset>.json]
        (GPU-free FLOP / saved-byte counts and the largest batch per GPU size: neuromf/bench_cost.py)

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
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from neuromf.io_atomic import write_json_atomic
from neuromf.meanflow import MeanFlowObjective
from neuromf.meanflow.jvp import JVP_STRATEGIES, jvp_exact
from neuromf.models import MeanFlowUNet
from neuromf.models.compile_utils import (
    channels_last_3d,
    compiled_time_derivative,
    enable_gradient_checkpointing,
)
from neuromf.training.budget import count_flops

PRESETS = {
    # production: conf/model/maisi.yaml, 4 x 48^3 latents
    "maisi": dict(
        model=dict(
            in_channels=4,
            num_channels=(64, 128, 256, 512),
            attention_levels=(False, False, True, True),
            num_res_blocks=2,
            num_head_channels=(0, 0, 32, 32),
            norm_num_groups=32,
        ),
        shape=(4, 48, 48, 48),
        batch=8,
        dtype="bf16",
    ),
    # CI smoke: runs in seconds on a CPU
    "cpu-small": dict(
        model=dict(
            in_channels=1,
            num_channels=(8, 16),
            attention_levels=(False, True),
            num_res_blocks=1,
            num_head_channels=8,
            norm_num_groups=4,
        ),
        shape=(1, 16, 16, 16),
        batch=2,
        dtype="fp32",
    ),
}
STRATEGIES = ("fm", "meanflow", "imf", "imf_separate", "jvp_only")
IMF_KINDS = ("imf", "imf_separate")
# step times: ratio to the fastest FM step (compiled or eager) at the maisi preset on an H100, bf16, batch >= 8
TARGETS = {"meanflow_ms_ratio_max": 1.5, "imf_ms_ratio_max": 2.0, "peak_ratio_max": 1.2, "imf_samples_per_s_min": 30}
# what must agree for two runs' step times to be compared (`--baseline`, `--check`)
COMPARABLE = ("preset", "batch", "dtype", "tf32", "channels_last", "checkpointing", "optimizer", "flash_attention")


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
        cost_default = "fm,meanflow,imf,imf_separate,alphaflow,splitmeanflow"
        args.strategies = cost_default if args.cost else "fm,meanflow,imf,jvp_only"
    if args.cost and "--batch" not in (argv if argv is not None else sys.argv[1:]):
        args.batch = 1
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.dtype = args.dtype or preset["dtype"]
    args.strategies, args.jvp = _csv(args.strategies), _csv(args.jvp)
    for s in args.strategies:
        allowed = (*STRATEGIES, "alphaflow", "splitmeanflow") if args.cost else STRATEGIES  # cost rows: every objective
        if s not in allowed:
            p.error(f"--strategies: {s!r} is not one of {allowed}")
    for j in args.jvp:
        if j not in JVP_STRATEGIES:
            p.error(f"--jvp: {j!r} is not one of {JVP_STRATEGIES}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


# ---- measurement -----------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        """Milliseconds of one call of fn."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while fn() runs (the activation memory)."""
    seen: dict[int, int] = {}

    def pack(x):
        try:
            st = x.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. subclasses)
            pass
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn()
    return sum(seen.values())


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


# ---- cases -----------------------------------------------------------------------------------------------------
def build_model(cfg: dict, use_v_head: bool, args, device) -> MeanFlowUNet:
    torch.manual_seed(args.seed)
    model = MeanFlowUNet(**cfg, use_v_head=use_v_head, use_flash_attention=args.flash_attention).to(device)
    with torch.no_grad():  # MAISI zero-initialises output convs: randomise so du/dt and grads are non-trivial
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    if args.channels_last:
        channels_last_3d(model)
    if args.checkpointing:
        enable_gradient_checkpointing(model)
    return model


def make_step(kind: str, jvp: str | None, model, args, device, x: torch.Tensor):
    """Returns (step(), forward_only()) closures; forward_only builds the graph and returns the loss. The compiled
    functions are used when the model carries them (`run` attaches them under --compile)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if args.optimizer else None
    derivative = getattr(model, "_bench_derivative", {}).get(jvp)
    form = "separate" if kind == "imf_separate" else "shared"
    obj = (
        MeanFlowObjective(jvp=jvp or "exact", derivative_fn=derivative, imf_v_loss=form)
        if kind in ("meanflow", *IMF_KINDS)
        else None
    )
    fm_forward = getattr(model, "_bench_forward", None) or model

    def forward():
        with autocast:
            if kind == "fm":
                eps = torch.randn(x.shape, generator=gen, device=device)
                t = torch.sigmoid(torch.randn(x.shape[0], generator=gen, device=device) - 0.4)
                tb = t.view(-1, 1, 1, 1, 1)
                z = (1 - tb) * x + tb * eps
                if args.channels_last:
                    z = z.contiguous(memory_format=torch.channels_last_3d)
                return F.mse_loss(fm_forward(z, t, t).float(), eps - x)
            if kind == "jvp_only":
                t = torch.rand(x.shape[0], generator=gen, device=device)
                jvp_exact(model, x, t * 0.5, t, x)
                return None
            loss, _ = obj(model, x, generator=gen)
            return loss

    def step():
        loss = forward()
        if loss is None:
            return
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step, forward


def achieved_tflops(flops: float, ms: float) -> float:
    """TFLOP/s of a step of `flops` FLOPs that took `ms` milliseconds."""
    return flops / (ms * 1e-3) / 1e12


def run_case(name: str, kind: str, jvp: str | None, model, args, device, x, timer, compiled: bool = False) -> dict:
    row = {"case": name, "kind": kind, "jvp": jvp, "compiled": compiled, "status": "ok"}
    step, forward = make_step(kind, jvp, model, args, device, x)
    cuda = device.type == "cuda"
    try:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
        row["warmup_s"] = round(time.perf_counter() - t0, 2)
        times = [timer(step) for _ in range(args.steps)]
        row["ms_median"] = statistics.median(times)
        row["ms_all"] = [round(v, 3) for v in times]
        row["samples_per_s"] = args.batch / (row["ms_median"] / 1e3)
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        if args.flops:  # one more step, under the counter (after the timing and the peak memory)
            row["flops"] = count_flops(step)
            row["tflops_per_s"] = achieved_tflops(row["flops"], row["ms_median"])
        if kind != "jvp_only":
            row["saved_gib"] = saved_tensor_bytes(forward) / 2**30
        else:
            row["saved_gib"] = 0.0
        model.zero_grad(set_to_none=True)
    except Exception as e:  # noqa: BLE001 — one failing case must not lose the others
        model.zero_grad(set_to_none=True)
        row["status"] = "OOM" if _is_oom(e) else f"error: {type(e).__name__}: {str(e)[:300]}"
        if not _is_oom(e) and os.environ.get("NEUROMF_BENCH_RAISE"):
            raise
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def fm_rows(results: list[dict], source: str = "this run") -> list[dict]:
    """The measured FM steps of one run as baseline candidates: {case, ms_median, compiled, source}."""
    return [
        {"case": r["case"], "ms_median": r["ms_median"], "compiled": bool(r.get("compiled")), "source": source}
        for r in results
        if r["kind"] == "fm" and r["status"] == "ok" and r.get("ms_median")
    ]


def fastest_fm(results: list[dict], baselines: list[dict] = (), source: str = "this run") -> dict | None:
    """The FM step to beat: the fastest of this run's FM rows and `baselines` (fm_rows of comparable runs), with
    `measured`: which of eager / compiled FM were timed at all (None when no FM step was measured)."""
    rows = fm_rows(results, source) + list(baselines)
    if not rows:
        return None
    best = min(rows, key=lambda r: r["ms_median"])
    return {**best, "measured": sorted({"compiled" if r["compiled"] else "eager" for r in rows})}


def add_ratios(results: list[dict], baselines: list[dict] = (), source: str = "this run") -> dict | None:
    """Ratios of time, peak memory and saved-activation memory to this run's (first) FM step, and of time to the
    fastest FM step (`fastest_fm`: compiled or eager, this run or `baselines`); None where unavailable. Returns the
    fastest FM."""
    fm = next((r for r in results if r["kind"] == "fm" and r["status"] == "ok"), None)
    best = fastest_fm(results, baselines, source)
    for r in results:
        for key, ref in (
            ("ms_median", "ratio_ms_to_fm"),
            ("peak_gib", "ratio_peak_to_fm"),
            ("saved_gib", "ratio_saved_to_fm"),
        ):
            a, b = r.get(key), (fm or {}).get(key)
            r[ref] = a / b if r["status"] == "ok" and a is not None and b else None
        ok = r["status"] == "ok" and r.get("ms_median") is not None and best is not None
        r["ratio_ms_to_best_fm"] = r["ms_median"] / best["ms_median"] if ok else None
    return best


def check_targets(results: list[dict]) -> dict:
    """The step-time targets (meaningful for the maisi preset on an H100, bf16, batch >= 8): step time as a ratio to
    the fastest FM step (`ratio_ms_to_best_fm`, set by add_ratios), peak memory to this run's FM step."""
    out = {}
    for r in results:
        if r["status"] != "ok" or r["kind"] not in ("meanflow", *IMF_KINDS):
            continue
        lim = TARGETS["imf_ms_ratio_max" if r["kind"] in IMF_KINDS else "meanflow_ms_ratio_max"]
        ratio = r.get("ratio_ms_to_best_fm")
        out[r["case"]] = {
            "ms_ratio_to_best_fm": ratio,
            "ms_ratio_max": lim,
            "ms_ratio_ok": ratio is not None and ratio <= lim,
            "peak_ratio_ok": None
            if r["ratio_peak_to_fm"] is None
            else r["ratio_peak_to_fm"] <= TARGETS["peak_ratio_max"],
            **(
                {"samples_per_s_ok": r["samples_per_s"] >= TARGETS["imf_samples_per_s_min"]}
                if r["kind"] in IMF_KINDS
                else {}
            ),
        }
    return out


def _fmt(v, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(results: list[dict]) -> str:
    head = (
        f"{'case':<24}{'ms':>10}{'x FM':>8}{'x best':>8}{'peak GiB':>10}{'x FM':>7}{'saved GiB':>11}{'x FM':>7}"
        f"{'samples/s':>11}{'TFLOP/s':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['case']:<24}{r['status']}")
            continue
        lines.append(
            f"{r['case']:<24}{_fmt(r['ms_median'], '10.1f')}{_fmt(r['ratio_ms_to_fm'], '8.2f')}"
            f"{_fmt(r.get('ratio_ms_to_best_fm'), '8.2f')}"
            f"{_fmt(r['peak_gib'], '10.2f')}{_fmt(r['ratio_peak_to_fm'], '7.2f')}"
            f"{_fmt(r['saved_gib'], '11.3f')}{_fmt(r['ratio_saved_to_fm'], '7.2f')}"
            f"{_fmt(r['samples_per_s'], '11.1f')}{_fmt(r.get('tflops_per_s'), '9.3f')}"
        )
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    )


def comparable(a: dict, b: dict) -> list[str]:
    """What differs between two bench payloads that makes their step times incomparable ([] if nothing)."""
    out = ["device"] if a["device"] != b["device"] else []
    return out + [k for k in COMPARABLE if a["config"].get(k) != b["config"].get(k)]


def load_bench_json(path: str | Path) -> dict:
    payload = json.loads(Path(path).read_text())
    if "results" not in payload or "config" not in payload or payload["config"].get("cost"):
        raise ValueError(f"{path}: not a timing JSON of python -m neuromf.bench")
    return payload


def baseline_rows(paths, reference: dict) -> list[dict]:
    """fm_rows of the bench JSONs at `paths`; ValueError naming the file and the keys when one is not comparable with
    `reference` (a payload: device and the COMPARABLE settings must agree)."""
    rows = []
    for path in paths:
        other = load_bench_json(path)
        diff = comparable(reference, other)
        if diff:
            raise ValueError(f"--baseline {path}: not comparable with this run ({', '.join(diff)} differ)")
        rows += fm_rows(other["results"], source=str(path))
    return rows


Case = tuple[str, str, str | None, bool, bool]  # name, kind, jvp, use_v_head, compiled


def bench_cases(strategies: list[str], jvps: list[str], compile_: bool) -> list[Case]:
    """The cases to time, in order. FM is always timed (every ratio needs it); under compile
    also its eager form, first (`fm_eager`, on an uncompiled copy): the targets compare with the faster of the two."""
    cases = []
    for kind in strategies:
        if kind == "fm":
            cases.append(("fm", "fm", None, False, compile_))
        elif kind == "jvp_only":
            cases.append(("jvp_only/exact", "jvp_only", "exact", False, False))
        else:
            cases += [(f"{kind}/{j}", kind, j, kind in IMF_KINDS, compile_) for j in jvps]
    if not any(k[1] == "fm" for k in cases):
        cases.insert(0, ("fm", "fm", None, False, compile_))
    if compile_:
        cases.insert(0, ("fm_eager", "fm", None, False, False))
    return cases


def run(args: argparse.Namespace, on_update=None) -> dict:
    """Runs every case; `on_update(payload)` is called after each one (the CLI rewrites the JSON, so a run cut short
    keeps the cases already measured)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    baselines = baseline_rows(args.baseline, _payload(args, device, {}, [], None)) if args.baseline else []
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu":  # denormal tangents/gradients otherwise slow CPU steps 5-20x at random (GPUs don't care)
        torch.set_flush_denormal(True)
    preset = PRESETS[args.preset]
    x = torch.randn((args.batch, *preset["shape"]), generator=torch.Generator().manual_seed(args.seed)).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    timer = _Timer(device)

    cases = bench_cases(args.strategies, args.jvp, args.compile)
    models: dict[tuple[bool, bool], MeanFlowUNet] = {}
    n_params: dict[str, float] = {}
    results: list[dict] = []
    best = None
    for name, kind, jvp, v_head, compiled in cases:
        if (v_head, compiled) not in models:
            models.clear()
            gc.collect()
            m = models[v_head, compiled] = build_model(preset["model"], v_head, args, device)
            n_params["imf" if v_head else "meanflow"] = sum(p.numel() for p in m.parameters()) / 1e6
            if compiled:
                m._bench_derivative = {
                    j: compiled_time_derivative(m, j, mode=args.compile_mode) for j in JVP_STRATEGIES
                }
                m._bench_forward = m._bench_derivative["exact"].forward
                if v_head:
                    m.v = torch.compile(m.v, mode=args.compile_mode)
        row = run_case(name, kind, jvp, models[v_head, compiled], args, device, x, timer, compiled=compiled)
        print(
            f"  {name}: {row['status']}" + (f" {row['ms_median']:.1f} ms" if row["status"] == "ok" else ""),
            file=sys.stderr,
            flush=True,
        )
        results.append(row)
        best = add_ratios(results, baselines)
        if on_update is not None:
            on_update(_payload(args, device, n_params, results, best))
    return _payload(args, device, n_params, results, best)


def _payload(args, device, n_params: dict, results: list[dict], best: dict | None) -> dict:
    preset = PRESETS[args.preset]
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "command": "python -m neuromf.bench " + " ".join(args.argv),
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "argv", "check")},
            "model": preset["model"],
            "latent_shape": preset["shape"],
            "params_m": n_params,
        },
        "results": results,
        "fm_baseline": best,
        "targets": {"limits": TARGETS, "checks": check_targets(results)},
    }


def check_runs(paths: list[str]) -> dict:
    """`--check`: the targets of every MeanFlow / iMF row of these bench JSONs against the fastest FM step among all
    of them (ValueError when their device or settings differ)."""
    payloads = [load_bench_json(p) for p in paths]
    for path, other in zip(paths[1:], payloads[1:], strict=True):
        diff = comparable(payloads[0], other)
        if diff:
            raise ValueError(f"--check {path}: not comparable with {paths[0]} ({', '.join(diff)} differ)")
    candidates = [row for path, pl in zip(paths, payloads, strict=True) for row in fm_rows(pl["results"], path)]
    runs = []
    for path, pl in zip(paths, payloads, strict=True):
        best = add_ratios(pl["results"], [r for r in candidates if r["source"] != path], source=path)
        runs.append({"source": path, "command": pl["command"], "results": pl["results"], "fm_baseline": best})
    checks = {f"{r['source']}:{case}": v for r in runs for case, v in check_targets(r["results"]).items()}
    return {
        "device": payloads[0]["device"],
        "command": "python -m neuromf.bench --check " + " ".join(paths),
        "fm_baseline": fastest_fm([], candidates),
        "runs": runs,
        "targets": {"limits": TARGETS, "checks": checks},
    }


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
            ratio = _fmt(v["ms_ratio_to_best_fm"], "5.2f")
            print(f"  {case}: {ratio}x the fastest FM step (<= {v['ms_ratio_max']}) {verdict}")
        if args.out:
            write_json_atomic(Path(args.out), payload)
            print(f"wrote {args.out}")
        return 0
    if args.cost:
        from neuromf.bench_cost import format_cost_table, run_cost

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


if __name__ == "__main__":
    raise SystemExit(main())
