"""The timed cases: which steps run (FM, MeanFlow / iMF per JVP strategy, the JVP alone), the network each runs on,
one step's closure, and the run of every case into a bench payload (config, rows, FM baseline, targets).
Latents: (B, C, D, H, W); r, t: (B,).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from neuromf.bench.measure import Timer, achieved_tflops, is_oom, saved_tensor_bytes
from neuromf.bench.presets import IMF_KINDS, PRESETS
from neuromf.bench.speed_options import channels_last_3d, compiled_time_derivative, enable_gradient_checkpointing
from neuromf.bench.targets import TARGETS, add_ratios, baseline_rows, check_targets
from neuromf.meanflow import MeanFlowObjective
from neuromf.meanflow.jvp import JVP_STRATEGIES, jvp_exact
from neuromf.meanflow.tensors import per_sample
from neuromf.models import MeanFlowUNet
from neuromf.training.budget import count_flops

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
                tb = per_sample(t, x)
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
        row["status"] = "OOM" if is_oom(e) else f"error: {type(e).__name__}: {str(e)[:300]}"
        if not is_oom(e) and os.environ.get("NEUROMF_BENCH_RAISE"):
            raise
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    )


def run(args: argparse.Namespace, on_update=None) -> dict:
    """Runs every case; `on_update(payload)` is called after each one (the CLI rewrites the JSON, so a run cut short
    keeps the cases already measured)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    baselines = baseline_rows(args.baseline, payload(args, device, {}, [], None)) if args.baseline else []
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
    timer = Timer(device)

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
            on_update(payload(args, device, n_params, results, best))
    return payload(args, device, n_params, results, best)


def payload(args, device, n_params: dict, results: list[dict], best: dict | None) -> dict:
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
