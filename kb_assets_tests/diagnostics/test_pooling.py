"""Pooling comparison on vectors and distances built so each number is known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kb_assets.diagnostics import (
    SampledAlleles,
    add_squared_distances,
    add_subject_distances,
    cohort_subjects,
    distance_rank_agreement,
    gene_table,
    half_split_cosine,
    half_split_cosines,
    strategy_cosines,
)
from kb_assets.encoders.gene_pooling import GeneVectors

E1, E2, E3 = np.eye(3)


def test_one_window_has_identical_halves():
    assert half_split_cosine(np.array([[0.3, -2.0, 5.0]]), np.array([1.0])) == 1.0


def test_halves_are_weighted_means_of_the_first_floor_and_last_ceil_windows():
    assert half_split_cosine(np.array([E1, E2]), np.array([1.0, 1.0])) == pytest.approx(0.0, abs=1e-12)
    # Three windows: the first alone against the weighted mean (e1 + 3·e2)/4 of the other two.
    assert half_split_cosine(np.array([E1, E1, E2]), np.array([5.0, 1.0, 3.0])) == pytest.approx(1 / np.sqrt(10))
    # Four windows: e1, e1 | e1, e2 (equal weights) → cos(e1, (e1 + e2)/2) = 1/√2.
    assert half_split_cosine(np.array([E1, E1, E1, E2]), np.ones(4)) == pytest.approx(1 / np.sqrt(2))


def test_half_split_per_gene_orders_tiles_5_to_3_prime_and_weighs_regions():
    regions = pd.DataFrame({
        # Gene G's regions listed out of transcription order; gene S has one region with one tile.
        "region_id": ["G:2", "G:1", "S:1"], "gene_id": ["G", "G", "S"], "gene_name": ["G", "G", "S"],
        "gene_order": [0, 0, 1], "region_index": [2, 1, 1], "chrom": ["chr1"] * 3, "length": [300, 100, 50],
    })
    # G:1 (100 bp) has tiles e1 then e2 (10 counted tokens each); G:2 (300 bp) one tile e3; S:1 one tile.
    tile_region, tile_order, counts = np.array([1, 1, 0, 2]), np.array([0, 1, 0, 0]), np.array([10, 10, 40, 7])

    def split(vectors, region_to_gene="length_weighted"):
        return half_split_cosines(regions, tile_region, tile_order, np.array(vectors), counts,
                                  region_to_gene).set_index("gene_id")

    result = split([E1, E2, E3, E1 + E2])
    assert result.loc["G", "n_tiles"] == 3 and result.loc["S", "n_tiles"] == 1
    # 5'→3': e1 | e2 (weight 0.25·0.5), e3 (weight 0.75): halves e1 and (e2 + 6·e3)/7 are orthogonal.
    assert result.loc["G", "half_split_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert result.loc["S", "half_split_cosine"] == 1.0
    # Now e2 | e1, e1: orthogonal again; with e1 first instead the halves would agree.
    assert split([E2, E1, E1, E1], "mean").loc["G", "half_split_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert split([E1, E1, E1, E1], "mean").loc["G", "half_split_cosine"] == pytest.approx(1.0)
    # A tile's weight is its share of its region's counted tokens: e1 counting 30 of G:1's 40 tokens.
    weighted = half_split_cosines(regions, tile_region, tile_order, np.array([E1, E2, E1, E1]),
                                  np.array([30, 10, 40, 7]), "mean").set_index("gene_id")
    first = E1
    second = (0.5 * 0.25 * E2 + 0.5 * E1) / (0.5 * 0.25 + 0.5)
    assert weighted.loc["G", "half_split_cosine"] == pytest.approx(first @ second / np.linalg.norm(second))


def test_strategy_cosines_per_gene_and_pair():
    genes = pd.DataFrame({"gene_id": ["A", "B"], "gene_name": ["a", "b"], "chrom": ["chr1", "chr2"]})
    vectors = {"mean": np.array([E1, E1]), "cls": np.array([E1, -E1]), "max": np.array([E2, E1 + E2])}
    result = strategy_cosines(genes, vectors).set_index(["gene_id", "strategy_a", "strategy_b"])["cosine"]
    assert len(result) == 2 * 3
    assert result[("A", "mean", "cls")] == pytest.approx(1.0)
    assert result[("B", "mean", "cls")] == pytest.approx(-1.0)
    assert result[("A", "mean", "max")] == pytest.approx(0.0, abs=1e-12)
    assert result[("B", "cls", "max")] == pytest.approx(-1 / np.sqrt(2))


def test_squared_distances_add_over_genes_and_keep_identical_subjects_at_zero():
    total = np.zeros((3, 3))
    add_squared_distances(total, np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    add_squared_distances(total, np.array([[1.0], [1.0], [1.0]], dtype=np.float32))  # one allele for all: adds 0
    add_squared_distances(total, np.array([[0.1], [2.1], [0.1]], dtype=np.float32))
    assert total[0, 2] == 0.0 and total[2, 0] == 0.0
    assert total[0, 1] == pytest.approx(25 + 4, rel=1e-6) and total[1, 2] == pytest.approx(29, rel=1e-6)
    assert np.all(np.diag(total) == 0.0)


def test_rank_agreement_of_distances():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 4))
    squared = ((points[:, None] - points[None]) ** 2).sum(-1)
    distances = {"mean": squared, "cls": np.sqrt(squared), "max": squared.max() - squared}
    np.fill_diagonal(distances["max"], 0.0)
    result = distance_rank_agreement(distances).set_index(["strategy_a", "strategy_b"])
    assert result.loc[("mean", "cls"), "spearman_rho"] == pytest.approx(1.0)  # monotone: same ranks
    assert result.loc[("mean", "max"), "spearman_rho"] == pytest.approx(-1.0)  # reversed ranks
    assert result["n_subjects"].tolist() == [6, 6, 6] and result["n_pairs"].tolist() == [15, 15, 15]


def test_rank_agreement_is_undefined_without_spread_or_pairs():
    flat = {p: np.zeros((4, 4)) for p in ("mean", "cls", "max")}
    assert distance_rank_agreement(flat)["spearman_rho"].isna().all()
    one = {p: np.zeros((1, 1)) for p in ("mean", "cls", "max")}
    result = distance_rank_agreement(one)
    assert result["spearman_rho"].isna().all() and result["n_pairs"].tolist() == [0, 0, 0]


def test_cohort_subjects_first_by_id_present_on_every_chromosome():
    chr1 = pd.DataFrame({"subject_id": ["REF", "s3", "s1", "s2", "s4", "s10"]})
    chr2 = pd.DataFrame({"subject_id": ["REF", "s1", "s2", "s3", "s10"]})  # s4 excluded here
    assert cohort_subjects([chr1, chr2], 3) == (["s1", "s10", "s2"], 4)
    assert cohort_subjects([chr1, chr2], 500) == (["s1", "s10", "s2", "s3"], 4)
    assert cohort_subjects([], 5) == ([], 0)


def test_gene_table_in_gene_set_order():
    regions = pd.DataFrame({"region_id": ["b1", "a1", "a2"], "gene_id": ["B", "A", "A"], "gene_name": ["b", "a", "a"],
                            "gene_order": [1, 0, 0], "chrom": ["chr2", "chr1", "chr1"], "length": [10, 20, 30]})
    table = gene_table(regions)
    assert table["gene_id"].tolist() == ["A", "B"]
    assert table["length_bp"].tolist() == [50, 10] and table["n_regions"].tolist() == [2, 1]


def _pooled_chromosome(n_genes: int, seed: int = 0) -> tuple[GeneVectors, SampledAlleles]:
    """Genes with a reference vector (code 0) and three carried ones, rows shuffled; 30 sampled subjects, each gene
    carried by some of them; the sample's stats are never read once pool_genes is replaced."""
    rng = np.random.default_rng(seed)
    vectors = pd.DataFrame({"gene_order": np.repeat(np.arange(n_genes), 4), "code": np.tile(np.arange(4), n_genes)})
    vectors = vectors.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    carriers = [(subject, gene, int(rng.integers(1, 4))) for gene in range(n_genes)
                for subject in rng.choice(30, size=int(rng.integers(0, 12)), replace=False)]
    assignments = pd.DataFrame(carriers, columns=["subject_index", "gene_order", "code"]).astype(np.int32)
    genes = GeneVectors(vectors, rng.normal(size=(len(vectors), 2)).astype(np.float32), assignments, 0)
    stats = SimpleNamespace(vectors=lambda pooling: None, forward=SimpleNamespace(counts=np.zeros(0)))
    sample = SampledAlleles(alleles=pd.DataFrame(), stats=stats, assignments=pd.DataFrame(),
                            subject_indices=np.arange(30), row_subject_index=rng.permutation(30), ploidy=1)
    return genes, sample


def test_subject_distances_sum_each_genes_squared_distances_and_scan_the_assignments_once(monkeypatch):
    genes, sample = _pooled_chromosome(n_genes=40)
    monkeypatch.setattr("kb_assets.diagnostics.subjects.pool_genes", lambda *args: genes)
    full_scans = []
    compare = pd.Series.__eq__

    def counted(series, other):
        if len(series) == len(genes.assignments):
            full_scans.append(series.name)
        return compare(series, other)

    monkeypatch.setattr(pd.Series, "__eq__", counted)
    total = np.zeros((30, 30))
    add_subject_distances(total, pd.DataFrame(), sample, "mean", "mean")
    monkeypatch.undo()
    # A gene's assignments are found without comparing every assignment's gene, gene after gene.
    assert full_scans == []

    expected = np.zeros((30, 30))
    for gene_order in range(40):
        carried = genes.assignments[genes.assignments["gene_order"] == gene_order]
        code = pd.Series(carried["code"].to_numpy(), index=carried["subject_index"].to_numpy())
        rows = [genes.vectors.index[(genes.vectors["gene_order"] == gene_order)
                                    & (genes.vectors["code"] == code.get(subject, 0))][0]
                for subject in sample.row_subject_index]
        vectors = genes.matrix[rows].astype(np.float64)
        expected += ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(total, expected, rtol=1e-12, atol=1e-12)
