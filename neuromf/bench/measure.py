"""Measuring one training step: wall time (CUDA events or perf_counter), the bytes autograd saves for backward, the
achieved TFLOP/s, and the out-of-memory test."""

from __future__ import annotations

import time

import torch


class Timer:
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


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def achieved_tflops(flops: float, ms: float) -> float:
    """TFLOP/s of a step of `flops` FLOPs that took `ms` milliseconds."""
    return flops / (ms * 1e-3) / 1e12
