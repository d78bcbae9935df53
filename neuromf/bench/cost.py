"""GPU-free cost model of one training step (`python -m neuromf.bench --cost`): FLOPs and saved activation bytes per
sample for every objective (FM, MeanFlow / iMF x JVP strategy, AlphaFlow at 0 < alpha < 1, SplitMeanFlow; the
last two on the network without a v-head), and the largest per-device batch that fits a 40 / 80 GB GPU.

    python -m neuromf.bench --cost --preset cpu-small|maisi [--batch 1] [--jvp exact,fd,exact_fused]
        [--strategies fm,meanflow,imf,imf_separate,alphaflow,splitmeanflow] [--bf16-size 16]
        [--out benchmarks/cost_<preset>.json]

Counting (real compute on the CPU, float32, `--batch` samples, default 1; FLOPs and saved bytes are linear in the
batch): one step = the real objective (neuromf.meanflow on `MeanFlowUNet`; FM = |u(z_t, t, t) - v|^2) + backward,
run once under `torch.utils.flop_counter.FlopCounterMode` (matmul/conv/attention FLOPs, forward-mode tangent ops
included; elementwise ops are not counted) and autograd saved-tensor hooks as in `neuromf.bench.measure` (distinct
storages saved for backward, the parameters themselves excluded: they are counted once in the fixed memory below).

Gradient checkpointing (non-reentrant, every down/middle/up block and v-head res block: `enable_gradient_checkpointing`)
is modelled from the same run: every saved byte is attributed to the checkpointable block running when it was saved;
with checkpointing a graph-recording pass keeps the bytes saved outside those blocks plus each block call's inputs,
and backward re-runs one block at a time, so the peak adds the largest single block call's saved bytes. Extra FLOPs:
one more plain forward of every block call that recorded a graph (each block's forward FLOPs measured in a plain pass).

bf16 (autocast, float32 weights): saved bytes per sample = the float32 count x the case's bf16/float32 ratio,
measured with real CPU autocast on the same network at a reduced cube (`--bf16-size`, batch 1 and 2: per-sample
bytes from the difference, the batch-independent bf16 weight copies from the intercept). Under autocast convs and
matmuls save bf16, GroupNorm/softmax (CUDA autocast's float32 list, emulated on the CPU, whose autocast runs
them in bf16) and the SiLU after a GroupNorm save float32, so the ratio is above 0.5. Assumes the ratio at the
reduced cube holds at the full one (attention's share grows with the cube).

Fit: per device, weights 4N + gradients 4N + AdamW 8N + EMA copy 4N bytes (N parameters, float32; + the bf16
weight copies under bf16), usable memory = 0.92 x capacity - 1 GiB (CUDA context, cuDNN workspace, allocator
fragmentation); the largest batch B with fixed + B x activation bytes <= usable. Transients (forward-mode tangents,
one sample's attention matrices in the fused tangent, gradient buffers in backward) are left to the margin.
No timing is modelled: GPU step times stay unmeasured.
"""

from __future__ import annotations

import contextlib
import gc
import math
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from neuromf.meanflow import AlphaFlowObjective, MeanFlowObjective, SplitMeanFlowObjective
from neuromf.meanflow.tensors import per_sample
from neuromf.models import MeanFlowUNet
from neuromf.training.budget import countable_forward_ad

# one row per objective (fm_warmstart / imf_schedule cost as meanflow / imf: schedules only)
COST_KINDS = ("fm", "meanflow", "imf", "imf_separate", "alphaflow", "splitmeanflow")
NO_JVP_KINDS = ("alphaflow", "splitmeanflow")  # JVP-free targets: one row each, no JVP strategy
GPUS_GIB = {"40GB": 40536 / 1024, "80GB": 81251 / 1024}  # total memory nvidia-smi reports for A100 40 / 80 GB
USABLE_FRACTION, RESERVED_GIB = 0.92, 1.0
OPTIMIZER_BYTES_PER_PARAM = {"weights": 4, "grads": 4, "adamw": 8, "ema": 4}


@contextlib.contextmanager
def _cuda_autocast_policy():
    """CPU autocast runs GroupNorm and softmax in bf16; CUDA autocast runs them in float32 (its fp32 list). While
    counting bf16, F.group_norm and softmax take CUDA's rule (float32 in, float32 out)."""
    gn, sm, tsm = F.group_norm, F.softmax, torch.Tensor.softmax

    def group_norm(x, *a, **k):
        if not torch.is_autocast_enabled("cpu"):
            return gn(x, *a, **k)
        with torch.autocast("cpu", enabled=False):
            return gn(x.float(), *a, **k)

    def softmax(x, *a, **k):
        if not torch.is_autocast_enabled("cpu"):
            return tsm(x, *a, **k)
        with torch.autocast("cpu", enabled=False):
            return tsm(x.float(), *a, **k)

    F.group_norm, F.softmax, torch.Tensor.softmax = group_norm, softmax, softmax
    try:
        yield
    finally:
        F.group_norm, F.softmax, torch.Tensor.softmax = gn, sm, tsm


def checkpoint_blocks(model: MeanFlowUNet) -> dict[str, torch.nn.Module]:
    """The blocks `enable_gradient_checkpointing` wraps, by name."""
    unet = model.unet
    blocks = {f"down{i}": b for i, b in enumerate(unet.down_blocks)}
    blocks["middle"] = unet.middle_block
    blocks.update({f"up{i}": b for i, b in enumerate(unet.up_blocks)})
    if model.v_head is not None:
        blocks.update({f"v_head{i}": b for i, b in enumerate(model.v_head.blocks)})
    return blocks


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class StepCounter:
    """FLOPs and saved bytes of one step, with the per-block attribution the checkpointing model needs."""

    def __init__(self, model: MeanFlowUNet):
        self.model = model
        self.params = {p.untyped_storage()._cdata for p in model.parameters()}
        self.blocks = checkpoint_blocks(model)

    def __call__(self, forward) -> dict:
        saved: dict[int, int] = {}  # storage -> bytes (deduplicated)
        owner: dict[int, str | None] = {}  # storage -> checkpointable block call that saved it (None: outside)
        call_saved: dict[str, int] = {}  # block call -> bytes saved inside it
        inputs: dict[int, int] = {}  # storages of the inputs of graph-recording block calls
        calls: list[tuple[str, int]] = []  # (block name, FLOPs of the call) for graph-recording calls
        stack: list[tuple[str, str, float]] = []  # (call id, block name, flops at entry)
        counter = FlopCounterMode(display=False)

        def pre(name):
            def hook(_m, args, kwargs):
                if torch.is_grad_enabled():
                    for a in _tensors((args, kwargs)):
                        st = a.untyped_storage()
                        inputs.setdefault(st._cdata, st.nbytes())
                    stack.append((f"{name}#{len(calls) + len(stack)}", name, counter.get_total_flops()))

            return hook

        def post(name):
            def hook(_m, _args, _kwargs, _out):
                if stack and stack[-1][1] == name:
                    cid, _, f0 = stack.pop()
                    calls.append((cid, counter.get_total_flops() - f0))

            return hook

        def pack(x):
            try:
                st = x.untyped_storage()
            except (RuntimeError, NotImplementedError):
                return x
            key = st._cdata
            if key not in self.params and key not in saved:
                saved[key] = st.nbytes()
                cid = stack[-1][0] if stack else None
                owner[key] = cid
                if cid is not None:
                    call_saved[cid] = call_saved.get(cid, 0) + st.nbytes()
            return x

        handles = []
        for name, block in self.blocks.items():
            handles.append(block.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(block.register_forward_hook(post(name), with_kwargs=True))
        try:
            with countable_forward_ad(), counter:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
                    loss = forward()
                loss.backward()
        finally:
            for h in handles:
                h.remove()
            self.model.zero_grad(set_to_none=True)
        outside = sum(b for k, b in saved.items() if owner[k] is None)
        ckpt_inputs = sum(b for k, b in inputs.items() if k not in self.params)
        return {
            "flops": counter.get_total_flops(),
            "saved_bytes": sum(saved.values()),
            "saved_outside_blocks": outside,
            "ckpt_input_bytes": ckpt_inputs,
            "max_block_saved": max(call_saved.values(), default=0),
            "block_calls": [(cid.split("#")[0], f) for cid, f in calls],
        }


def _build(cfg: dict, v_head: bool, seed: int) -> MeanFlowUNet:
    torch.manual_seed(seed)
    model = MeanFlowUNet(**cfg, use_v_head=v_head)
    with torch.no_grad():  # zero-initialised output convs would make du/dt and grads trivial (not the counts)
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model


def _forward(kind: str, jvp: str | None, model, x, eps, r, t):
    if kind == "fm":  # FlowMatchingObjective at norm_p = 0 is this mean |u(z_t, t, t) - v|^2
        tb = per_sample(t, x)
        z = (1 - tb) * x + tb * eps
        return lambda: F.mse_loss(model(z, t, t).float(), eps - x)
    if kind == "alphaflow":  # alpha in (0, 1): the discrete target, one no-grad forward
        obj = AlphaFlowObjective(alpha_start=0.5, alpha_end=0.5, clamp=0.0)
        return lambda: obj(model, x, eps=eps, r=r, t=t)[0]
    if kind == "splitmeanflow":  # two no-grad forwards
        obj = SplitMeanFlowObjective()
        return lambda: obj(model, x, eps=eps, r=r, t=t)[0]
    obj = MeanFlowObjective(jvp=jvp, imf_v_loss="separate" if kind == "imf_separate" else "shared")
    return lambda: obj(model, x, eps=eps, r=r, t=t)[0]


def cases_for(kinds: list[str], jvps: list[str]) -> list[tuple[str, str, str | None]]:
    out = [("fm", "fm", None)]
    for kind in kinds:
        if kind in NO_JVP_KINDS:
            out.append((kind, kind, None))
        elif kind != "fm":
            out += [(f"{kind}/{j}", kind, j) for j in jvps]
    return out


def _inputs(shape, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.randn((batch, *shape), generator=g), torch.randn((batch, *shape), generator=g)
    return x, eps, torch.full((batch,), 0.3), torch.full((batch,), 0.7)


def count(preset: dict, cases, batch: int = 1, seed: int = 0, log=None) -> tuple[list[dict], dict]:
    """float32 counts per case at the preset's latent shape; FLOPs with checkpointing from per-block forward FLOPs."""
    x, eps, r, t = _inputs(preset["shape"], batch, seed)
    rows, models, n_params = [], {}, {}
    block_flops: dict[str, float] = {}  # plain forward FLOPs of each block (from graph calls of non-fused passes)
    for name, kind, jvp in cases:
        v_head = kind in ("imf", "imf_separate")
        if v_head not in models:
            models.clear()
            gc.collect()
            models[v_head] = _build(preset["model"], v_head, seed)
            n_params["imf" if v_head else "meanflow"] = sum(p.numel() for p in models[v_head].parameters())
        t0 = time.perf_counter()
        c = StepCounter(models[v_head])(_forward(kind, jvp, models[v_head], x, eps, r, t))
        if jvp != "exact_fused":
            for block, f in c["block_calls"]:
                block_flops.setdefault(block, f)
        c.update(case=name, kind=kind, jvp=jvp, count_s=round(time.perf_counter() - t0, 1))
        rows.append(c)
        if log:
            log(f"  {name}: {c['flops'] / 1e12 / batch:.3f} TFLOP/sample, {c['saved_bytes'] / 2**30 / batch:.3f} GiB")
    for c in rows:  # the checkpointing recomputation: one plain forward of every graph-recording block call
        fused = c["jvp"] == "exact_fused"
        c["recompute_flops"] = sum(block_flops.get(b, f / 2 if fused else f) for b, f in c.pop("block_calls"))
        for key in ("flops", "saved_bytes", "saved_outside_blocks", "ckpt_input_bytes", "max_block_saved"):
            c[key] /= batch
        c["recompute_flops"] /= batch
        c["ckpt_saved_bytes"] = c["saved_outside_blocks"] + c["ckpt_input_bytes"]
        c["ckpt_peak_bytes"] = c["ckpt_saved_bytes"] + c["max_block_saved"]
    return rows, n_params


def bf16_ratios(preset: dict, cases, size: int, seed: int = 0, log=None) -> dict[str, dict]:
    """Per case: bf16/float32 ratio of per-sample saved bytes and the bf16 batch-independent saved bytes, from real
    CPU autocast forwards at a size^3 cube, batch 1 and 2 (forward only: saved bytes need no backward)."""
    shape = (preset["shape"][0], size, size, size)
    out, models = {}, {}
    for name, kind, jvp in cases:
        v_head = kind in ("imf", "imf_separate")
        if v_head not in models:
            models.clear()
            models[v_head] = _build(preset["model"], v_head, seed)
        model = models[v_head]
        params = {p.untyped_storage()._cdata for p in model.parameters()}
        b = {}
        for dtype in ("fp32", "bf16"):
            for batch in (1, 2):
                x, eps, r, t = _inputs(shape, batch, seed)
                amp = torch.autocast("cpu", torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
                seen: dict[int, int] = {}

                def pack(a, seen=seen, params=params):
                    st = a.untyped_storage()
                    if st._cdata not in params:
                        seen[st._cdata] = st.nbytes()
                    return a

                with amp, _cuda_autocast_policy(), torch.autograd.graph.saved_tensors_hooks(pack, lambda a: a):
                    _forward(kind, jvp, model, x, eps, r, t)()
                b[dtype, batch] = sum(seen.values())
                model.zero_grad(set_to_none=True)
        per32, per16 = b["fp32", 2] - b["fp32", 1], b["bf16", 2] - b["bf16", 1]
        out[name] = {"ratio": per16 / per32, "fixed_bf16_bytes": max(0, 2 * b["bf16", 1] - b["bf16", 2])}
        if log:
            log(f"  bf16 {name}: ratio {out[name]['ratio']:.3f}")
    return out


def fit(rows: list[dict], n_params: int, ratios: dict | None) -> None:
    """Adds the largest per-device batch per GPU size, dtype and checkpointing to every row (in place)."""
    fixed32 = sum(OPTIMIZER_BYTES_PER_PARAM.values()) * n_params
    for c in rows:
        c["fit"] = {}
        for dtype in ("fp32", "bf16"):
            ratio, extra = 1.0, 0
            if dtype == "bf16":
                if not ratios or c["case"] not in ratios:
                    continue
                ratio, extra = ratios[c["case"]]["ratio"], ratios[c["case"]]["fixed_bf16_bytes"]
            for ckpt in (False, True):
                act = (c["ckpt_peak_bytes"] if ckpt else c["saved_bytes"]) * ratio
                key = f"{dtype}{'_ckpt' if ckpt else ''}"
                c["fit"][key] = {"activation_gib_per_sample": act / 2**30}
                for gpu, cap in GPUS_GIB.items():
                    usable = (USABLE_FRACTION * cap - RESERVED_GIB) * 2**30 - fixed32 - extra
                    c["fit"][key][gpu] = max(0, math.floor(usable / act)) if act > 0 else None


def add_ratios(rows: list[dict]) -> None:
    fm = next(c for c in rows if c["kind"] == "fm")
    for c in rows:
        c["flops_ratio_to_fm"] = c["flops"] / fm["flops"]
        c["saved_ratio_to_fm"] = c["saved_bytes"] / fm["saved_bytes"]


def run_cost(args, presets: dict) -> dict:
    preset = presets[args.preset]
    torch.set_flush_denormal(True)
    kinds = [k for k in args.strategies if k in COST_KINDS] or ["fm", "meanflow", "imf"]
    cases = cases_for(kinds, args.jvp)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    rows, n_params = count(preset, cases, batch=args.batch, seed=args.seed, log=log)
    size = args.bf16_size or preset["shape"][-1]
    ratios = bf16_ratios(preset, cases, size, seed=args.seed, log=log) if size > 0 else None
    n = n_params.get("imf", n_params.get("meanflow"))
    fit(rows, n, ratios)
    add_ratios(rows)
    return {
        "device": f"cpu ({platform.machine()}), counts only",
        "torch": torch.__version__,
        "command": "python -m neuromf.bench " + " ".join(args.argv),
        "config": {
            "preset": args.preset,
            "batch_counted": args.batch,
            "latent_shape": preset["shape"],
            "model": preset["model"],
            "params": n_params,
            "bf16_cube": size if ratios else None,
            "gpu_gib": GPUS_GIB,
            "usable": f"{USABLE_FRACTION} x capacity - {RESERVED_GIB} GiB",
            "fixed_bytes_per_param": OPTIMIZER_BYTES_PER_PARAM,
        },
        "bf16": ratios,
        "results": rows,
    }
