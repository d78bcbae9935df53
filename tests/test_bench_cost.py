"""The GPU-free cost model (`python -m neuromf.bench --cost`): FLOP and saved-byte ratios to the flow-matching step
on the cpu-small preset are counts, not timings, so they are asserted exactly enough to catch a regression."""

import json

import pytest

from neuromf.bench import main

LIMITS = {  # case: (max FLOP ratio, max saved-byte ratio) to the FM step
    "meanflow/exact_fused": (1.30, 0.6),
    "imf/exact_fused": (1.70, 0.6),
    "imf/fd": (1.70, 1.05),
    "imf/exact": (2.40, 1.05),
}


@pytest.fixture(scope="module")
def cost(tmp_path_factory):
    out = tmp_path_factory.mktemp("cost") / "cost.json"
    argv = ["--cost", "--preset", "cpu-small", "--batch", "2", "--bf16-size", "8", "--out", str(out)]
    assert main(argv) == 0
    return {r["case"]: r for r in json.loads(out.read_text())["results"]}


def test_imf_and_meanflow_ratios_meet_the_targets(cost):
    for case, (flops, saved) in LIMITS.items():
        assert cost[case]["flops_ratio_to_fm"] <= flops, (case, cost[case]["flops_ratio_to_fm"])
        assert cost[case]["saved_ratio_to_fm"] <= saved, (case, cost[case]["saved_ratio_to_fm"])
    # the former iMF form pays a v-head forward + backward: one FM step more than the shared form
    for j in ("exact", "exact_fused", "fd"):
        extra = cost[f"imf_separate/{j}"]["flops_ratio_to_fm"] - cost[f"imf/{j}"]["flops_ratio_to_fm"]
        assert 0.6 < extra < 0.7, (j, extra)  # + v-head pass with graph (3 F) - its no-grad pass (1 F): 2/3 of FM


# batch 2, cpu-small: (FLOPs, saved bytes) of one step per objective. torch.utils.flop_counter counts are
# deterministic: pinned, so any change of an objective's passes shows here (saved bytes per torch version).
COUNTS = {
    "fm": (2043218944, 29528768),
    "meanflow/exact": (4089978880, 29528784),
    "meanflow/fd": (2725472256, 29528784),
    "meanflow/exact_fused": (2591254528, 12227280),
    "imf/exact": (4782849024, 30118688),
    "imf/fd": (3418342400, 30118688),
    "imf/exact_fused": (3284124672, 12817184),
    "imf_separate/exact": (6133197824, 59024800),
    "imf_separate/fd": (4768691200, 59024800),
    "imf_separate/exact_fused": (4634473472, 41723296),
    "alphaflow": (2725472256, 29528784),
    "splitmeanflow": (3407725568, 29528784),
}


def test_every_objective_has_a_row_with_its_pinned_counts(cost):
    assert set(cost) == set(COUNTS)
    for case, (flops, saved) in COUNTS.items():
        assert (round(2 * cost[case]["flops"]), round(2 * cost[case]["saved_bytes"])) == (flops, saved), case
    # known answers: AlphaFlow (0 < alpha < 1) = FM + one no-grad forward (as meanflow/fd's shifted point),
    # SplitMeanFlow = FM + two no-grad forwards; neither keeps more activations than FM
    forward = cost["alphaflow"]["flops"] - cost["fm"]["flops"]
    assert cost["alphaflow"]["flops"] == cost["meanflow/fd"]["flops"]
    assert cost["splitmeanflow"]["flops"] - cost["fm"]["flops"] == 2 * forward
    assert cost["alphaflow"]["saved_ratio_to_fm"] < 1.001 and cost["splitmeanflow"]["saved_ratio_to_fm"] < 1.001


def test_fm_counts_and_fit(cost):
    fm = cost["fm"]
    assert fm["flops_ratio_to_fm"] == 1.0 and 2.0e9 < 2 * fm["flops"] < 2.1e9  # 2.04 GFLOP at batch 2
    assert fm["ckpt_peak_bytes"] < fm["saved_bytes"]
    for c in cost.values():
        assert c["recompute_flops"] > 0
        for key in ("fp32", "fp32_ckpt", "bf16", "bf16_ckpt"):
            assert c["fit"][key]["80GB"] >= c["fit"][key]["40GB"] > 0
