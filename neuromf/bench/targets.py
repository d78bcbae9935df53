"""Step-time targets: ratios to the fastest flow-matching (FM) step of one run, of comparable other runs
(`--baseline`), or of several finished runs (`--check`); the pass/fail per MeanFlow / iMF case."""

from __future__ import annotations

import json
from pathlib import Path

from neuromf.bench.presets import IMF_KINDS

# step times: ratio to the fastest FM step (compiled or eager) at the maisi preset on an H100, bf16, batch >= 8
TARGETS = {"meanflow_ms_ratio_max": 1.5, "imf_ms_ratio_max": 2.0, "peak_ratio_max": 1.2, "imf_samples_per_s_min": 30}

# what must agree for two runs' step times to be compared (`--baseline`, `--check`)
COMPARABLE = ("preset", "batch", "dtype", "tf32", "channels_last", "checkpointing", "optimizer", "flash_attention")


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
