"""Window vectors through the cache: the vectors the engine gives, one forward pass for every pooling, none on a
rerun, and cached entries left as they are."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from kb_assets.diagnostics import WindowVectors, cosine, pool_regions, sequence_vectors, strand, window_id
from kb_assets.encoders import Encoder
from kb_assets.encoders.engine import POOLINGS
from kb_assets.fingerprint import text_sha256
from kb_assets.genome import reverse_complement
from kb_assets.storage import EmbeddingCache
from kb_assets_tests.encoders.conftest import random_dna

# 40 bases fit one 64-token window; 900 bases need several.
SEQUENCES = [random_dna(40, seed=1), random_dna(900, seed=2), random_dna(300, seed=3)]
EMBED = {"window_tokens": 64, "window_overlap": 8}


class CountingEncoder:
    """encoder() for WindowVectors, counting how often the model was asked for."""

    def __init__(self, encoder: Encoder | None):
        self.encoder = encoder
        self.calls = 0

    def __call__(self) -> Encoder:
        self.calls += 1
        if self.encoder is None:
            raise AssertionError("a forward pass was asked for")
        return self.encoder


def test_embed_windows_pooled_equals_one_pooling_at_a_time(tiny_encoder):
    together = tiny_encoder.embed_windows_pooled(SEQUENCES, POOLINGS, rc="average", **EMBED)
    for pooling in POOLINGS:
        alone = tiny_encoder.embed_windows(SEQUENCES, pooling=pooling, rc="average", **EMBED)
        np.testing.assert_allclose(together[pooling].vectors, alone.vectors, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(together[pooling].token_start, alone.token_start)
    assert not np.allclose(together["mean"].vectors, together["cls"].vectors, atol=1e-3)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_vectors_from_windows_are_the_engines(tiny_encoder, warehouse, window_key, pooling):
    windows = WindowVectors(warehouse, window_key, tiny_encoder.tokenizer, CountingEncoder(tiny_encoder), 64,
                            4096).both_strands(SEQUENCES, "chr1")[pooling]
    n = len(SEQUENCES)
    options = {"pooling": pooling, **EMBED}
    np.testing.assert_allclose(sequence_vectors(windows, n, "average"),
                               tiny_encoder.embed(SEQUENCES, rc="average", **options), atol=1e-5, rtol=0)
    np.testing.assert_allclose(sequence_vectors(windows, n, "none"),
                               tiny_encoder.embed(SEQUENCES, rc="none", **options), atol=1e-5, rtol=0)
    reverse = [reverse_complement(s) for s in SEQUENCES]
    np.testing.assert_allclose(strand(windows, True).sequence_vectors(n),
                               tiny_encoder.embed(reverse, rc="none", **options), atol=1e-5, rtol=0)
    assert (np.bincount(strand(windows, False).sequence_index) > 1).tolist() == [False, True, True]


def test_one_forward_pass_fills_every_pooling_and_a_rerun_runs_none(tiny_encoder, warehouse, window_key):
    first_encoder = CountingEncoder(tiny_encoder)
    first = WindowVectors(warehouse, window_key, tiny_encoder.tokenizer, first_encoder, 64, 4096)
    made = first.both_strands(SEQUENCES + SEQUENCES[:1], "chr1")  # a repeat costs nothing more
    assert first_encoder.calls == 1
    distinct = made["mean"].sequence_index != 3
    n_windows = int(distinct.sum())
    assert first.embedded_windows == n_windows and first.cached_windows == 0

    rerun = WindowVectors(warehouse, window_key, tiny_encoder.tokenizer, CountingEncoder(None), 64, 4096)
    again = rerun.both_strands(SEQUENCES, "chr1")
    assert rerun.embedded_windows == 0 and rerun.cached_windows == n_windows
    for pooling in POOLINGS:
        np.testing.assert_array_equal(again[pooling].vectors, made[pooling].vectors[distinct])


def test_cached_windows_are_read_not_recomputed_or_overwritten(tiny_encoder, warehouse, window_key):
    sequence = SEQUENCES[0]
    token_count = len(tiny_encoder.tokenizer.encode(sequence))
    planted = window_id(text_sha256(sequence), 0, token_count)
    mean_cache = EmbeddingCache(warehouse, replace(window_key, rc_mode="none", pooling="mean"))
    mean_cache.store("chr1", [planted], np.full((1, 64), 7.0, dtype=np.float32))

    windows = WindowVectors(warehouse, window_key, tiny_encoder.tokenizer, CountingEncoder(tiny_encoder), 64,
                            4096).both_strands([sequence], "chr1")
    forward = strand(windows["mean"], False)
    np.testing.assert_array_equal(forward.vectors, np.full((1, 64), 7.0))
    ids, stored = mean_cache.lookup([planted])
    np.testing.assert_array_equal(stored, np.full((1, 64), 7.0))
    # The other strand and the other poolings were missing, so the sequence went through the model for them.
    assert not np.allclose(strand(windows["mean"], True).vectors, 7.0)
    assert not np.allclose(strand(windows["cls"], False).vectors, 7.0)


def test_pool_regions_weighs_regions_per_gene():
    regions = pd.DataFrame({
        "region_id": ["a1", "b1", "b2"], "gene_id": ["A", "B", "B"], "gene_name": ["A", "B", "B"],
        "gene_order": [1, 0, 0], "chrom": ["chr1"] * 3, "length": [5, 1, 3],
    })
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(pool_regions(regions, vectors, "length_weighted"), [[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(pool_regions(regions, vectors, "mean"), [[0.5, 0.5], [1.0, 0.0]])


def test_cosine_of_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
    result = cosine(a, b)
    np.testing.assert_allclose(result[:2], [0.0, 1.0], atol=1e-12)
    assert np.isnan(result[2])
