"""The report's sections, in page order. A section is one module with ``blocks(ctx) -> list`` (the blocks of
``neuromf.report.render``, read from the shared ``ReportContext``) and, optionally, its own template
``neuromf/report/templates/sections/<name>.html.j2``; adding one is that module plus one line below."""

from __future__ import annotations

from neuromf.report.sections import (
    config,
    cost,
    cost_quality,
    figures,
    final,
    intervals,
    losses,
    metrics,
    optuna,
    overview,
    provenance,
    runs,
    samples,
    steps,
    untrained,
    verdict,
)

SECTIONS = [
    ("verdict", verdict),
    ("overview", overview),
    ("steps", steps),
    ("cost_quality", cost_quality),
    ("intervals", intervals),
    ("untrained", untrained),
    ("final", final),
    ("config", config),
    ("losses", losses),
    ("metrics", metrics),
    ("runs", runs),
    ("figures", figures),
    ("samples", samples),
    ("cost", cost),
    ("provenance", provenance),
    ("optuna", optuna),
]
