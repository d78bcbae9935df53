"""Real-statistics cache: hit on the second call, miss after any key change, atomic files."""

import torch

from neuromf.evaluation.cache import StatsCache, tensor_fingerprint
from neuromf.evaluation.frechet import feature_stats


def _key(**over):
    key = {
        "dataset": {"user": "demo", "val_latents": "abc"},
        "preprocessing": {"spacing": [1, 1, 1]},
        "backbone": {"backbone": "deepbet-encoder", "input_size": 64},
    }
    key.update(over)
    return key


def test_hit_then_miss_after_change(tmp_path):
    calls = []
    feats = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))

    def compute():
        calls.append(1)
        return {"feat3d": feature_stats(feats)}

    cache = StatsCache(tmp_path)
    first = cache.get_or_compute(_key(), compute)
    assert (cache.hits, cache.misses, len(calls)) == (0, 1, 1)
    files = list(tmp_path.glob("deepbet-encoder-*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    # a new process (fresh instance) reuses the file from disk
    again = StatsCache(tmp_path)
    second = again.get_or_compute(_key(), compute)
    assert (again.hits, again.misses, len(calls)) == (1, 0, 1)
    torch.testing.assert_close(second["feat3d"].mu, first["feat3d"].mu)
    torch.testing.assert_close(second["feat3d"].sigma, first["feat3d"].sigma)
    assert second["feat3d"].n == 10

    # any change of dataset / preprocessing / backbone is a miss
    for changed in (
        _key(dataset={"user": "demo", "val_latents": "abd"}),
        _key(preprocessing={"spacing": [2, 2, 2]}),
        _key(backbone={"backbone": "deepbet-encoder", "input_size": 96}),
    ):
        again.get_or_compute(changed, compute)
    assert again.misses == 3 and len(calls) == 4
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


def test_corrupt_file_is_recomputed(tmp_path):
    cache = StatsCache(tmp_path)
    stats = {"a": feature_stats(torch.randn(5, 3))}
    path = cache.save(_key(), stats)
    path.write_bytes(b"garbage")
    fresh = StatsCache(tmp_path)
    assert fresh.load(_key()) is None
    out = fresh.get_or_compute(_key(), lambda: stats)
    assert fresh.misses == 1 and out["a"].n == 5 and StatsCache(tmp_path).load(_key()) is not None


def test_fingerprint_changes_with_data():
    x = torch.randn(3, 1, 4, 4, 4)
    assert tensor_fingerprint(x) == tensor_fingerprint(x.clone())
    y = x.clone()
    y[0, 0, 0, 0, 0] += 1e-3
    assert tensor_fingerprint(x) != tensor_fingerprint(y)
    assert tensor_fingerprint(x) != tensor_fingerprint(x.reshape(3, 4, 4, 4))


def test_tensor_entries_hit_from_memory_and_disk(tmp_path):
    calls = []
    key = _key(backbone={"backbone": "eval-reference"})

    def compute():
        calls.append(1)
        return {"real/feat3d": torch.randn(4, 3), "ref/kid/noise": torch.tensor([0.5], dtype=torch.float64)}

    cache = StatsCache(tmp_path)
    first = cache.get_or_compute_tensors(key, compute)
    again = cache.get_or_compute_tensors(key, compute)
    from_disk = StatsCache(tmp_path).get_or_compute_tensors(key, compute)
    assert len(calls) == 1 and (cache.misses, cache.hits) == (1, 1)
    assert list(tmp_path.glob("eval-reference-*.safetensors"))
    for t in (again, from_disk):
        torch.testing.assert_close(t["real/feat3d"], first["real/feat3d"])
        assert t["ref/kid/noise"].item() == 0.5
