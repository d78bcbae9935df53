"""Plain-text tables of the benchmark (timing rows) and of the cost model (count and fit rows)."""

from __future__ import annotations

import math


def fmt_value(v, spec: str) -> str:
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
            f"{r['case']:<24}{fmt_value(r['ms_median'], '10.1f')}{fmt_value(r['ratio_ms_to_fm'], '8.2f')}"
            f"{fmt_value(r.get('ratio_ms_to_best_fm'), '8.2f')}"
            f"{fmt_value(r['peak_gib'], '10.2f')}{fmt_value(r['ratio_peak_to_fm'], '7.2f')}"
            f"{fmt_value(r['saved_gib'], '11.3f')}{fmt_value(r['ratio_saved_to_fm'], '7.2f')}"
            f"{fmt_value(r['samples_per_s'], '11.1f')}{fmt_value(r.get('tflops_per_s'), '9.3f')}"
        )
    return "\n".join(lines)


def format_cost_table(rows: list[dict]) -> str:
    head = (
        f"{'case':<24}{'TFLOP/sample':>13}{'x FM':>7}{'saved GiB':>11}{'x FM':>7}{'ckpt GiB':>10}"
        f"{'bf16 GiB':>10}  max batch 40GB/80GB: fp32 | fp32+ckpt | bf16 | bf16+ckpt"
    )
    lines = [head, "-" * len(head)]
    for c in rows:
        fit_ = c.get("fit", {})
        cols = " | ".join(
            f"{fit_[k]['40GB']}/{fit_[k]['80GB']}" if k in fit_ else "-"
            for k in ("fp32", "fp32_ckpt", "bf16", "bf16_ckpt")
        )
        bf16 = fit_.get("bf16", {}).get("activation_gib_per_sample")
        lines.append(
            f"{c['case']:<24}{c['flops'] / 1e12:>13.4f}{c['flops_ratio_to_fm']:>7.2f}{c['saved_bytes'] / 2**30:>11.4f}"
            f"{c['saved_ratio_to_fm']:>7.2f}{c['ckpt_peak_bytes'] / 2**30:>10.4f}"
            f"{'-' if bf16 is None else format(bf16, '.4f'):>10}  {cols}"
        )
    return "\n".join(lines)
