"""Readers of the W&B view models that neuromf.dashboards writes (the JSON of a Workspace or Report): which
metric keys their panels plot and which run-summary names they read."""

from __future__ import annotations

import json
import re

_SUMMARY_FIELD = re.compile(r"\.(min|max|last|mean|best)$")


def panel_keys(obj) -> set[str]:
    """Every metric / media key the panels of a Workspace or Report view model plot (from its JSON); summary
    names (``key.min``) count as their metric key."""
    data = json.loads(obj) if isinstance(obj, str) else obj
    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            cfg = x.get("config") if isinstance(x.get("config"), dict) else {}
            for field in ("metrics", "mediaKeys"):
                found.update(_SUMMARY_FIELD.sub("", k) for k in cfg.get(field) or [] if isinstance(k, str))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    return found


def summary_refs(obj) -> set[str]:
    """Run-summary names a Workspace or Report view model reads: bar-chart metrics and every
    ``summary:<name>`` column (runs table, parallel coordinates)."""
    data = json.loads(obj) if isinstance(obj, str) else obj
    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            if x.get("viewType") == "Bar Chart":
                found.update((x.get("config") or {}).get("metrics") or [])
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str) and x.startswith("summary:"):
            found.add(x[len("summary:") :])

    walk(data)
    return found
