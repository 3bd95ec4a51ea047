"""Region allele vectors → the distinct gene vectors subjects carry, on hand-made vectors with known answers."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from kb_assets.encoders.gene_pooling import pool_genes, region_weights

# Gene G: regions G:1 (100 bp) and G:2 (300 bp); gene S: one region S:1.
REGIONS = pd.DataFrame({"region_id": ["G:1", "G:2", "S:1"], "gene_id": ["G", "G", "S"], "gene_name": ["g", "g", "s"],
                        "gene_order": [0, 0, 1], "length": [100, 300, 50]})
E = np.eye(4)
# Alleles: G:1 has the reference and allele 1; G:2 the reference, allele 1, and allele 2 (a whole-region deletion:
# empty, NaN); S:1 the reference only.
ALLELES = pd.DataFrame({"region_id": ["G:1", "G:1", "G:2", "G:2", "G:2", "S:1"], "allele": [0, 1, 0, 1, 2, 0]})
VECTORS = np.array([E[0], E[1], E[2], E[3], np.full(4, np.nan), E[0] + E[1]])


def assignments(rows: list[tuple[int, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subject_index", "region_id", "haplotype", "allele"])


def pool(regions, alleles, vectors, rows, subjects, ploidy, region_to_gene):
    """pool_genes with NaN rows standing for empty alleles."""
    return pool_genes(regions, alleles, vectors, np.isnan(vectors).any(axis=1), rows, subjects, ploidy,
                      region_to_gene)


def gene_vector(result, gene_order: int, subject_index: int) -> np.ndarray:
    carried = result.assignments[(result.assignments.subject_index == subject_index)
                                 & (result.assignments.gene_order == gene_order)]
    code = int(carried.code.iloc[0]) if len(carried) else 0
    rows = result.vectors[(result.vectors.gene_order == gene_order) & (result.vectors.code == code)]
    return result.matrix[rows.index[0]]


def test_region_weights_by_length_or_equal():
    assert region_weights(REGIONS, "length_weighted").to_dict() == {"G:1": 0.25, "G:2": 0.75, "S:1": 1.0}
    assert region_weights(REGIONS, "mean").to_dict() == {"G:1": 0.5, "G:2": 0.5, "S:1": 1.0}
    with pytest.raises(ValueError, match="region_to_gene must be one of"):
        region_weights(REGIONS, "median")


def test_subjects_with_the_same_alleles_share_one_vector_and_the_reference_is_code_0():
    rows = assignments([(0, "G:1", 0, 1), (2, "G:1", 0, 1), (3, "G:2", 0, 1)])
    result = pool(REGIONS, ALLELES, VECTORS, rows, np.arange(5), 1, "length_weighted")
    np.testing.assert_allclose(gene_vector(result, 0, 1), 0.25 * E[0] + 0.75 * E[2])  # the reference
    np.testing.assert_allclose(gene_vector(result, 0, 0), 0.25 * E[1] + 0.75 * E[2])
    np.testing.assert_allclose(gene_vector(result, 0, 3), 0.25 * E[0] + 0.75 * E[3])
    np.testing.assert_allclose(gene_vector(result, 1, 3), E[0] + E[1])
    g = result.vectors[result.vectors.gene_order == 0].set_index("code")
    assert len(g) == 3 and g.loc[0, "n_subjects"] == 2 and sorted(g["n_subjects"]) == [1, 2, 2]
    assert len(result.assignments) == 3  # only the three non-reference subject genes are listed
    assert set(result.vectors.loc[result.vectors.gene_order == 1, "code"]) == {0}


def test_phased_haplotypes_are_averaged_and_order_does_not_matter():
    rows = assignments([(0, "G:1", 0, 1), (1, "G:1", 1, 1), (2, "G:1", 0, 1), (2, "G:1", 1, 1)])
    result = pool(REGIONS, ALLELES, VECTORS, rows, np.arange(3), 2, "mean")
    reference, variant = 0.5 * E[0] + 0.5 * E[2], 0.5 * E[1] + 0.5 * E[2]
    np.testing.assert_allclose(gene_vector(result, 0, 0), (reference + variant) / 2)
    np.testing.assert_array_equal(gene_vector(result, 0, 0), gene_vector(result, 0, 1))  # 1|0 and 0|1: one code
    np.testing.assert_allclose(gene_vector(result, 0, 2), variant)


def test_a_deleted_region_contributes_nothing_and_a_fully_deleted_gene_is_zero_and_flagged():
    deleted_g2 = VECTORS.copy()
    deleted_g1 = VECTORS.copy()
    deleted_g1[1] = np.nan  # G:1 allele 1 empty as well
    rows = assignments([(0, "G:2", 0, 2), (1, "G:2", 0, 2), (1, "G:1", 0, 1)])
    result = pool(REGIONS, ALLELES, deleted_g2, rows, np.arange(3), 1, "length_weighted")
    # Subject 0 lost G:2: its gene is G:1 alone (weights renormalized).
    np.testing.assert_allclose(gene_vector(result, 0, 0), E[0])
    gone = pool(REGIONS, ALLELES, deleted_g1, rows, np.arange(3), 1, "length_weighted")
    np.testing.assert_array_equal(gene_vector(gone, 0, 1), np.zeros(4))
    flagged = gone.vectors[gone.vectors.all_regions_deleted]
    assert len(flagged) == 1 and flagged.n_subjects.tolist() == [1]
    assert gone.empty_region_haplotypes == 3


def test_phased_deletion_on_one_haplotype_keeps_the_other():
    deleted = VECTORS.copy()
    deleted[1] = np.nan
    rows = assignments([(0, "G:1", 0, 1), (0, "G:2", 0, 2)])  # haplotype 0 lost both regions
    result = pool(REGIONS, ALLELES, deleted, rows, np.arange(1), 2, "length_weighted")
    np.testing.assert_allclose(gene_vector(result, 0, 0), 0.25 * E[0] + 0.75 * E[2])  # haplotype 1 alone
    assert not result.vectors.all_regions_deleted.any()


def test_subjects_not_listed_are_left_out_and_unknown_alleles_refused():
    rows = assignments([(0, "G:1", 0, 1), (4, "G:1", 0, 1)])
    result = pool(REGIONS, ALLELES, VECTORS, rows, np.array([0, 1]), 1, "mean")
    assert result.assignments.subject_index.tolist() == [0]
    assert result.vectors.set_index(["gene_order", "code"]).loc[(0, 0), "n_subjects"] == 1
    with pytest.raises(ValueError, match="no vector for allele 7 of region G:1"):
        pool(REGIONS, ALLELES, VECTORS, assignments([(0, "G:1", 0, 7)]), np.arange(1), 1, "mean")


def test_many_subjects_match_pooling_each_subject_alone():
    rng = np.random.default_rng(0)
    regions = pd.DataFrame({"region_id": [f"r{i}" for i in range(6)], "gene_id": ["A"] * 4 + ["B"] * 2,
                            "gene_name": ["A"] * 4 + ["B"] * 2, "gene_order": [0] * 4 + [1] * 2,
                            "length": rng.integers(50, 500, 6)})
    alleles = pd.DataFrame({"region_id": np.repeat(regions.region_id, 4), "allele": np.tile(np.arange(4), 6)})
    vectors = rng.normal(size=(len(alleles), 8))
    n = 300
    rows = [(s, f"r{r}", h, int(rng.integers(1, 4))) for s in range(n) for r in range(6) for h in range(2)
            if rng.random() < 0.1]
    result = pool(regions, alleles, vectors, assignments(rows), np.arange(n), 2, "length_weighted")
    weights = region_weights(regions, "length_weighted")
    allele_row = {(r, a): i for i, (r, a) in enumerate(zip(alleles.region_id, alleles.allele))}
    carried = {(s, r, h): a for s, r, h, a in rows}
    for subject in rng.choice(n, 40, replace=False):
        for gene_order, names in ((0, [f"r{i}" for i in range(4)]), (1, ["r4", "r5"])):
            haplotypes = [sum(weights[r] * vectors[allele_row[(r, carried.get((subject, r, h), 0))]] for r in names)
                          / sum(weights[r] for r in names) for h in range(2)]
            np.testing.assert_allclose(gene_vector(result, gene_order, subject), np.mean(haplotypes, axis=0),
                                       atol=1e-6)
    assert len(result.vectors) < n  # subjects share vectors


def test_pooling_allocates_for_the_carriers_not_for_the_cohort():
    """Ten carriers among two million kept subjects: the work, and the memory, follow the carriers. A per-gene
    array over every subject (16 MB of int64 here) would exceed the bound."""
    subjects = np.arange(2_000_000)
    rows = assignments([(s, "G:1", 0, 1) for s in range(0, 2_000_000, 200_000)])
    tracemalloc.start()
    try:
        result = pool(REGIONS, ALLELES, VECTORS, rows, subjects, 1, "mean")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert result.assignments["subject_index"].tolist() == list(range(0, 2_000_000, 200_000))
    g = result.vectors[result.vectors.gene_order == 0].set_index("code")
    assert g["n_subjects"].tolist() == [2_000_000 - 10, 10]
