"""Training-step benchmark: flow matching vs MeanFlow vs iMF (each JVP strategy) on MeanFlowUNet.

    python -m neuromf.bench --preset cpu-small|maisi [--batch 8] [--dtype bf16|fp32] [--steps 10] [--warmup 3]
        [--strategies fm,meanflow,imf,jvp_only] [--jvp exact,fd,exact_fused] [--compile] [--channels-last]
        [--checkpointing] [--optimizer] [--out benchmarks/<name>.json]
    python -m neuromf.bench --cost --preset cpu-small|maisi [--bf16-size 16] [--out benchmarks/cost_<preset>.json]
        (GPU-free FLOP / saved-byte counts and the largest batch per GPU size: neuromf/bench_cost.py)

A step = objective + backward (+ AdamW step with --optimizer) of the real engine (MeanFlowObjective on
MeanFlowUNet); the flow-matching baseline is |u(z_t, t, t) - v|^2 forward + backward on the same network.
`imf` is iMF with the v-head's loss on the u pass (loss.imf_v_loss=shared, the default), `imf_separate` the
former form (a v-head pass with its graph). `jvp_only` times torch.func.jvp alone under no_grad.
Timing: CUDA events (or perf_counter on CPU) after warm-up, median of `steps`. Memory:
torch.cuda.max_memory_allocated per case (CUDA only) and, on every device, the bytes of tensors saved for backward by
one step (autograd saved-tensor hooks, deduplicated by storage).
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
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from neuromf.meanflow import MeanFlowObjective
from neuromf.meanflow.jvp import JVP_STRATEGIES, jvp_exact
from neuromf.models import MeanFlowUNet
from neuromf.models.compile_utils import (
    channels_last_3d,
    compiled_time_derivative,
    enable_gradient_checkpointing,
)

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
TARGETS = {"meanflow_ms_ratio_max": 1.5, "imf_ms_ratio_max": 2.4, "peak_ratio_max": 1.2, "imf_samples_per_s_min": 30}


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
        help="default fm,meanflow,imf,jvp_only (with --cost: fm,meanflow,imf,imf_separate)",
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
    p.add_argument("--cost", action="store_true", help="count FLOPs / saved bytes (no timing) and fit the batch")
    p.add_argument(
        "--bf16-size", type=int, default=None, help="--cost: cube edge of the bf16 ratio count (0: skip bf16)"
    )
    args = p.parse_args(argv)
    if args.strategies is None:
        args.strategies = "fm,meanflow,imf,imf_separate" if args.cost else "fm,meanflow,imf,jvp_only"
    if args.cost and "--batch" not in (argv if argv is not None else sys.argv[1:]):
        args.batch = 1
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.dtype = args.dtype or preset["dtype"]
    args.strategies, args.jvp = _csv(args.strategies), _csv(args.jvp)
    for s in args.strategies:
        if s not in STRATEGIES:
            p.error(f"--strategies: {s!r} is not one of {STRATEGIES}")
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
    """Returns (step(), forward_only()) closures; forward_only builds the graph and returns the loss."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if args.optimizer else None
    derivative = getattr(model, "_bench_derivative", {}).get(jvp) if args.compile else None
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


def run_case(name: str, kind: str, jvp: str | None, model, args, device, x, timer) -> dict:
    row = {"case": name, "kind": kind, "jvp": jvp, "status": "ok"}
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


def add_ratios(results: list[dict]) -> None:
    """Ratios of time, peak memory and saved-activation memory to the flow-matching step (None if unavailable)."""
    fm = next((r for r in results if r["kind"] == "fm" and r["status"] == "ok"), None)
    for r in results:
        for key, ref in (
            ("ms_median", "ratio_ms_to_fm"),
            ("peak_gib", "ratio_peak_to_fm"),
            ("saved_gib", "ratio_saved_to_fm"),
        ):
            a, b = r.get(key), (fm or {}).get(key)
            r[ref] = a / b if r["status"] == "ok" and a is not None and b else None


def check_targets(results: list[dict]) -> dict:
    """The issue's targets (meaningful for the maisi preset on an H100, bf16, batch >= 8)."""
    out = {}
    for r in results:
        if r["status"] != "ok" or r["kind"] not in ("meanflow", *IMF_KINDS):
            continue
        lim = TARGETS["imf_ms_ratio_max" if r["kind"] in IMF_KINDS else "meanflow_ms_ratio_max"]
        out[r["case"]] = {
            "ms_ratio_ok": r["ratio_ms_to_fm"] is not None and r["ratio_ms_to_fm"] <= lim,
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
    head = f"{'case':<24}{'ms':>10}{'x FM':>8}{'peak GiB':>10}{'x FM':>7}{'saved GiB':>11}{'x FM':>7}{'samples/s':>11}"
    lines = [head, "-" * len(head)]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['case']:<24}{r['status']}")
            continue
        lines.append(
            f"{r['case']:<24}{_fmt(r['ms_median'], '10.1f')}{_fmt(r['ratio_ms_to_fm'], '8.2f')}"
            f"{_fmt(r['peak_gib'], '10.2f')}{_fmt(r['ratio_peak_to_fm'], '7.2f')}"
            f"{_fmt(r['saved_gib'], '11.3f')}{_fmt(r['ratio_saved_to_fm'], '7.2f')}"
            f"{_fmt(r['samples_per_s'], '11.1f')}"
        )
    return "\n".join(lines)


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def run(args: argparse.Namespace, on_update=None) -> dict:
    """Runs every case; `on_update(payload)` is called after each one (the CLI rewrites the JSON, so a run cut short
    keeps the cases already measured)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
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

    cases: list[tuple[str, str, str | None, bool]] = []  # name, kind, jvp, use_v_head
    for kind in args.strategies:
        if kind == "fm":
            cases.append(("fm", "fm", None, False))
        elif kind == "jvp_only":
            cases.append(("jvp_only/exact", "jvp_only", "exact", False))
        else:
            cases += [(f"{kind}/{j}", kind, j, kind in IMF_KINDS) for j in args.jvp]
    if not any(c[1] == "fm" for c in cases):
        cases.insert(0, ("fm", "fm", None, False))  # every ratio needs the baseline

    models: dict[bool, MeanFlowUNet] = {}
    n_params: dict[str, float] = {}
    results = []
    for name, kind, jvp, v_head in cases:
        if v_head not in models:
            models.clear()
            gc.collect()
            models[v_head] = build_model(preset["model"], v_head, args, device)
            n_params["imf" if v_head else "meanflow"] = sum(p.numel() for p in models[v_head].parameters()) / 1e6
            if args.compile:
                m = models[v_head]
                m._bench_derivative = {
                    j: compiled_time_derivative(m, j, mode=args.compile_mode) for j in JVP_STRATEGIES
                }
                m._bench_forward = m._bench_derivative["exact"].forward
                if v_head:
                    m.v = torch.compile(m.v, mode=args.compile_mode)
        row = run_case(name, kind, jvp, models[v_head], args, device, x, timer)
        print(
            f"  {name}: {row['status']}" + (f" {row['ms_median']:.1f} ms" if row["status"] == "ok" else ""),
            file=sys.stderr,
            flush=True,
        )
        results.append(row)
        add_ratios(results)
        if on_update is not None:
            on_update(_payload(args, device, n_params, results))
    return _payload(args, device, n_params, results)


def _payload(args, device, n_params: dict, results: list[dict]) -> dict:
    preset = PRESETS[args.preset]
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "command": "python -m neuromf.bench " + " ".join(args.argv),
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "argv")},
            "model": preset["model"],
            "latent_shape": preset["shape"],
            "params_m": n_params,
        },
        "results": results,
        "targets": {"limits": TARGETS, "checks": check_targets(results)},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    print(
        f"{payload['device']} | torch {payload['torch']} | {args.preset} batch {args.batch} {args.dtype}"
        f"{' compile' if args.compile else ''}{' channels-last' if args.channels_last else ''}"
        f"{' checkpointing' if args.checkpointing else ''} | params {payload['config']['params_m']}"
    )
    print(format_table(payload["results"]))
    if args.out:
        write_json_atomic(Path(args.out), payload)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
