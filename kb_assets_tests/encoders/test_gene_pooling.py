"""Sequence vectors → gene vectors, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kb_assets.encoders.gene_pooling import pool_genes, region_weights

REGIONS = pd.DataFrame({
    "region_id": ["g1:1", "g1:2", "g2:1"],
    "gene_id": ["g1", "g1", "g2"],
    "gene_name": ["ONE", "ONE", "TWO"],
    "gene_order": [1, 1, 0],
    "length": [100, 300, 50],
})
SEQUENCE_IDS = pd.Index(["r1", "r2", "r3", "alt1", "alt3"])
VECTORS = np.array([[1, 0], [0, 1], [2, 2], [5, 5], [4, 0]], dtype=np.float32)


def _assignments(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subject_id", "region_id", "haplotype", "sequence_id"])


def test_exons_to_gene_by_mean_and_by_length():
    assignments = _assignments([("REF", "g1:1", 0, "r1"), ("REF", "g1:2", 0, "r2"), ("REF", "g2:1", 0, "r3")])
    keys, mean = pool_genes(assignments, REGIONS, SEQUENCE_IDS, VECTORS, "mean")
    # Genes come out in gene-set order (gene_order), not region order.
    assert keys["gene_id"].tolist() == ["g2", "g1"]
    np.testing.assert_allclose(mean, [[2, 2], [0.5, 0.5]])
    _, weighted = pool_genes(assignments, REGIONS, SEQUENCE_IDS, VECTORS, "length_weighted")
    np.testing.assert_allclose(weighted, [[2, 2], [0.25, 0.75]])


def test_haplotypes_are_averaged_before_regions():
    assignments = _assignments([
        ("S1", "g1:1", 0, "alt1"), ("S1", "g1:1", 1, "r1"), ("S1", "g1:2", 0, "r2"), ("S1", "g1:2", 1, "r2"),
        ("S1", "g2:1", 0, "r3"), ("S1", "g2:1", 1, "alt3"),
    ])
    keys, vectors = pool_genes(assignments, REGIONS, SEQUENCE_IDS, VECTORS, "length_weighted")
    assert keys[["subject_id", "gene_name"]].values.tolist() == [["S1", "TWO"], ["S1", "ONE"]]
    region_1 = (np.array([5, 5]) + np.array([1, 0])) / 2
    np.testing.assert_allclose(vectors[1], 0.25 * region_1 + 0.75 * np.array([0, 1]))
    np.testing.assert_allclose(vectors[0], [3, 1])


def test_weights_sum_to_one_per_gene_and_unknown_sequence_is_refused():
    weights = region_weights(REGIONS, "length_weighted")
    assert weights.groupby(REGIONS.set_index("region_id")["gene_id"]).sum().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no vector for sequence missing"):
        pool_genes(_assignments([("REF", "g2:1", 0, "missing")]), REGIONS, SEQUENCE_IDS, VECTORS, "mean")


def test_result_does_not_depend_on_the_order_vectors_arrive_in():
    rng = np.random.default_rng(0)
    ids = pd.Index([f"s{i}" for i in range(40)])
    vectors = rng.normal(size=(40, 16)).astype(np.float32)
    regions = pd.DataFrame({"region_id": [f"r{i}" for i in range(40)], "gene_id": "g", "gene_name": "G",
                            "gene_order": 0, "length": rng.integers(50, 500, 40)})
    assignments = _assignments([("S", f"r{i}", 0, f"s{i}") for i in range(40)])
    _, forward = pool_genes(assignments, regions, ids, vectors, "length_weighted")
    shuffled = rng.permutation(40)
    _, again = pool_genes(assignments, regions, ids[shuffled], vectors[shuffled], "length_weighted")
    assert forward.tobytes() == again.tobytes()
