"""The window cache: content-addressed lookups, incremental commits that survive a killed run, one folder per model,
dtype and device kind."""

from __future__ import annotations

import numpy as np
import pytest

from kb_assets.encoders.engine import WindowBatch
from kb_assets.encoders.pooling import PooledStats
from kb_assets.encoders.windows import ModelWindow
from kb_assets.storage import EmbeddingCache, EmbeddingKey, Warehouse
from kb_assets.storage import embedding_cache as cache_module

KEY = EmbeddingKey("model-sha", "float32", "cpu", False)
H = 3


def windows(n: int, offset: int = 0) -> list[ModelWindow]:
    return [ModelWindow((1, 5 + i + offset, 6, 2), 1, 3) for i in range(n)]


def fake_stats(batch: list[ModelWindow]) -> PooledStats:
    """Statistics that identify the window: its distinctive id in every entry."""
    marks = np.array([w.input_ids[1] for w in batch], dtype=np.float64)
    return PooledStats(np.repeat(marks[:, None], H, 1), np.full(len(batch), 2), np.repeat(marks[:, None], H, 1),
                       np.repeat(2 * marks[:, None], H, 1))


def embed_in_batches(size: int, fail_after: int | None = None, seen: list | None = None):
    def embed(missing: list[ModelWindow]):
        for number, start in enumerate(range(0, len(missing), size)):
            if fail_after is not None and number == fail_after:
                raise RuntimeError("killed")
            batch = missing[start:start + size]
            if seen is not None:
                seen.extend(batch)
            yield WindowBatch(np.arange(start, start + len(batch)), fake_stats(batch), 4 * len(batch), 4 * len(batch))
    return embed


def test_cached_windows_are_read_back_and_only_the_missing_embedded(tmp_path):
    cache = EmbeddingCache(Warehouse(tmp_path), KEY)
    first, use = cache.fill(windows(5), H, embed_in_batches(2))
    assert (use.hits, use.embedded, use.embedded_tokens) == (0, 5, 20)
    np.testing.assert_array_equal(first.sums[:, 0], [5, 6, 7, 8, 9])
    seen: list = []
    again, use = cache.fill(windows(3, offset=3) + windows(1), H, embed_in_batches(2, seen=seen))
    # Windows 8, 9 and 5 were cached; only the new one (id 10) ran.
    assert (use.hits, use.embedded) == (3, 1) and [w.input_ids[1] for w in seen] == [10]
    np.testing.assert_array_equal(again.sums[:, 0], [8, 9, 10, 5])
    assert use.tokens_per_second is not None
    _, nothing = cache.fill(windows(5), H, embed_in_batches(2, fail_after=0))
    assert nothing.embedded == 0 and nothing.tokens_per_second is None  # no throughput to report


def test_repeated_windows_are_embedded_once(tmp_path):
    seen: list = []
    stats, use = EmbeddingCache(Warehouse(tmp_path), KEY).fill(windows(2) * 3, H, embed_in_batches(10, seen=seen))
    assert use.embedded == 2 and len(seen) == 2
    np.testing.assert_array_equal(stats.sums[:, 0], [5, 6] * 3)


def test_a_killed_run_keeps_its_committed_parts_and_the_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "COMMIT_WINDOWS", 4)
    cache = EmbeddingCache(Warehouse(tmp_path), KEY)
    with pytest.raises(RuntimeError, match="killed"):
        cache.fill(windows(20), H, embed_in_batches(3, fail_after=4))  # 12 windows done in 4 batches
    assert len(list(cache.folder.glob("part-*.parquet"))) == 2  # committed at 6 and at 12 windows
    seen: list = []
    stats, use = cache.fill(windows(20), H, embed_in_batches(3, seen=seen))
    assert use.hits == 12 and use.embedded == 8 and len(seen) == 8
    np.testing.assert_array_equal(stats.sums[:, 0], np.arange(5, 25))


@pytest.mark.parametrize("change", [{"model_sha256": "other"}, {"dtype": "bfloat16"}, {"device_kind": "cuda"},
                                    {"compiled": True}])
def test_each_model_dtype_and_device_kind_has_its_own_cache(tmp_path, change):
    warehouse = Warehouse(tmp_path)
    EmbeddingCache(warehouse, KEY).fill(windows(2), H, embed_in_batches(2))
    other = EmbeddingCache(warehouse, EmbeddingKey(**{**KEY.__dict__, **change}))
    assert other.folder != EmbeddingCache(warehouse, KEY).folder
    found, _ = other.lookup([w.key for w in windows(2)], H)
    assert not found.any()
