"""Reference vectors for the diagnostics, read through the window cache: both strands as the engine gives them, one
forward pass for every pooling strategy, none on a rerun."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kb_assets.diagnostics import cosine, pool_regions, reference_stats
from kb_assets.encoders.engine import run_windows
from kb_assets.encoders.pooling import POOLINGS
from kb_assets.genome.tiles import tile_alleles
from kb_assets.storage import EmbeddingCache, EmbeddingKey
from kb_assets_tests.encoders.conftest import random_dna

# 40 bases fit one 64-token window; 900 bases need several windows, and two 400-bp tiles.
SEQUENCES = [random_dna(40, seed=1), random_dna(900, seed=2), random_dna(300, seed=3)]
WINDOWS = {"window_tokens": 64, "window_overlap": 8}


def regions_of(sequences: list[str]) -> pd.DataFrame:
    starts = np.cumsum([0, *map(len, sequences)])[:-1] + 100
    return pd.DataFrame({"region_id": [f"G{i}:1" for i in range(len(sequences))],
                         "gene_id": [f"G{i}" for i in range(len(sequences))],
                         "gene_name": [f"g{i}" for i in range(len(sequences))], "gene_order": range(len(sequences)),
                         "region_index": 1, "chrom": "chr1", "start": starts, "end": starts + [len(s) for s in
                                                                                           sequences],
                         "strand": "+", "sequence": sequences, "length": [len(s) for s in sequences]})


def tables(sequences: list[str], tile_bp: int | None):
    regions = regions_of(sequences)
    alleles = pd.DataFrame({"region_id": regions["region_id"], "allele": 0, "edits": [[]] * len(regions)})
    tiles, allele_tiles = tile_alleles(regions, alleles, tile_bp, 30)
    return regions, tiles, allele_tiles


class CountingEmbedder:
    """The cache's embed callable, counting the windows it is asked for."""

    def __init__(self, encoder):
        self.encoder, self.windows = encoder, 0

    def __call__(self, missing):
        self.windows += len(missing)
        if self.encoder is None:
            raise AssertionError("a forward pass was asked for")
        return run_windows(self.encoder.model, missing, unk_ids=self.encoder.tokenizer.unk_ids,
                           pad_id=self.encoder.tokenizer.pad_id, batch_tokens=4096, device=self.encoder.device)


@pytest.fixture
def cache(warehouse) -> EmbeddingCache:
    return EmbeddingCache(warehouse, EmbeddingKey("tiny-model", "float32", "cpu", False))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_strand_vectors_are_the_engines(tiny_encoder, cache, pooling):
    regions, tiles, allele_tiles = tables(SEQUENCES, 400)
    reference, embedded = reference_stats(regions, tiles, allele_tiles, tiny_encoder.tokenizer, cache,
                                          CountingEmbedder(tiny_encoder), 64, **WINDOWS)
    strands = tiny_encoder.embed_strands(SEQUENCES, **WINDOWS, tile_bp=400, tile_context_bp=30)
    forward, reverse = reference.strand_vectors(pooling)
    np.testing.assert_allclose(forward, strands.forward.vectors(pooling), atol=1e-5)
    np.testing.assert_allclose(reverse, strands.reverse.vectors(pooling), atol=1e-5)
    np.testing.assert_allclose(reference.vectors(pooling, "average"), strands.vectors(pooling), atol=1e-5)
    np.testing.assert_allclose(reference.vectors(pooling, "none"), forward)
    assert embedded == tiny_encoder.last_stats.n_windows
    # Forward tiles, 5'→3': the 900-bp region has three 300-bp tiles.
    assert reference.tile_region.tolist() == [0, 1, 1, 1, 2] and reference.tile_order.tolist() == [0, 0, 1, 2, 0]


def test_one_forward_pass_fills_every_pooling_and_a_rerun_runs_none(tiny_encoder, cache):
    regions, tiles, allele_tiles = tables(SEQUENCES, None)
    first = CountingEmbedder(tiny_encoder)
    reference_stats(regions, tiles, allele_tiles, tiny_encoder.tokenizer, cache, first, 64, **WINDOWS)
    assert first.windows > len(SEQUENCES) * 2  # several windows, both strands
    again, embedded = reference_stats(regions, tiles, allele_tiles, tiny_encoder.tokenizer, cache,
                                      CountingEmbedder(None), 64, **WINDOWS)
    assert embedded == 0
    assert not np.allclose(again.strand_vectors("mean")[0], again.strand_vectors("max")[0])


def test_pool_regions_weighs_regions_per_gene_and_leaves_empty_ones_out():
    regions = pd.DataFrame({"region_id": ["a1", "a2", "b1"], "gene_id": ["A", "A", "B"], "gene_name": ["a", "a", "b"],
                            "gene_order": [0, 0, 1], "chrom": "chr1", "length": [100, 300, 50]})
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(pool_regions(regions, vectors, "length_weighted"), [[0.25, 0.75], [2.0, 2.0]])
    np.testing.assert_allclose(pool_regions(regions, vectors, "mean"), [[0.5, 0.5], [2.0, 2.0]])
    vectors[1] = np.nan  # a region with nothing counted
    np.testing.assert_allclose(pool_regions(regions, vectors, "length_weighted"), [[1.0, 0.0], [2.0, 2.0]])


def test_cosine_of_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
    result = cosine(a, b)
    assert result[0] == pytest.approx(0.0) and result[1] == pytest.approx(1.0) and np.isnan(result[2])
