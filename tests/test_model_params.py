"""The parameter counts the docs quote are the ones the Hydra model configs build (counted on the meta device)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from neuromf.instantiate import build

REPO = Path(__file__).resolve().parents[1]


def _count(*overrides: str) -> int:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides))
    with torch.device("meta"):  # shapes only: no 660 MB of weights
        net = build(dict(cfg.model), _convert_="all")
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=maisi"], 164_786_568),  # iMF (v-head res0), the production default
        (["model=maisi", "v_head=off"], 164_779_524),
        (["model=maisi_mr"], 178_655_752),  # the published MR layout
    ],
)
def test_model_configs_build_the_counted_parameters(overrides, expected):
    assert _count(*overrides) == expected


def test_the_docs_quote_the_counted_number():
    n = f"{_count('model=maisi') / 1e6:.1f} M"
    assert n == "164.8 M"
    readme = (REPO / "README.md").read_text()
    assert re.search(r"`maisi` \(64-128-256-512, [^)]*164\.8 M params\)", readme)
    assert "164.8 M param" in (REPO / "conf/model/maisi.yaml").read_text()
    for doc in ("README.md", "conf/model/maisi.yaml", "docs/performance.md", "benchmarks/README.md"):
        assert "178.6" not in (REPO / doc).read_text(), doc
