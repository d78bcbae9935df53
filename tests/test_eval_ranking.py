"""The default objective ranks sample sets of known quality in the right order (real-brain demo data)."""

from pathlib import Path

import pytest
import yaml

from neuromf.evaluation.callback import EvaluationCallback
from neuromf.evaluation.ranking import SET_NAMES, known_quality_sets, rank_correct, score_sets
from neuromf.evaluation.registry import DEFAULT_OBJECTIVE
from neuromf.evaluation.suite import MetricSuite

EVAL_CONF = Path(__file__).resolve().parents[1] / "conf" / "eval" / "default.yaml"


def test_rank_correct_direction():
    assert rank_correct([0.1, 0.2, 0.3, 0.4, 5.0], "feat3d_fd")
    assert not rank_correct([0.2, 0.1, 0.3, 0.4, 5.0], "feat3d_fd")
    assert rank_correct([1.0, 0.9, 0.5, 0.2, 0.0], "coverage")
    assert not rank_correct([1.0, 1.0, 0.5, 0.2, 0.0], "coverage")  # ties are not an order


@pytest.mark.slow
def test_default_objective_ranks_known_quality_sets(demo_latents):
    from neuromf.data import LatentDataModule
    from neuromf.evaluation.feat3d import DeepBetFeatures

    conf = yaml.safe_load(EVAL_CONF.read_text())
    n, size, k = conf["num_samples"], conf["feat3d_input_size"], conf["knn_k"]
    assert EvaluationCallback().objective_key == DEFAULT_OBJECTIVE
    metric = DEFAULT_OBJECTIVE.split("/")[1]  # val/<metric>/nfe1
    dm = LatentDataModule(latent_dir=str(demo_latents))
    dm.setup()
    suite = MetricSuite(dm.decode, feat3d=DeepBetFeatures(input_size=size), knn_k=k, msssim=False)
    for seed in (0, 1):
        scores = score_sets(suite, known_quality_sets(dm.train_latents(), n, seed=seed), dm.val_latents())
        values = [scores[s][metric] for s in SET_NAMES]
        print(f"seed {seed}: {metric} " + ", ".join(f"{s} {v:.3f}" for s, v in zip(SET_NAMES, values, strict=True)))
        assert rank_correct(values, metric), f"{metric} does not rank {SET_NAMES}: {values}"
