"""RC-averaging stability on vectors chosen so every cosine is known, and on a real model for a palindrome."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kb_assets.diagnostics import length_bin, most_moved, rc_stability

E1, E2, E3 = np.eye(3)


@pytest.fixture
def regions() -> pd.DataFrame:
    """Gene A (chr1): one 500 bp region. Gene B (chr2): regions of 1,000 and 3,000 bp (length weights 1:3)."""
    return pd.DataFrame({
        "region_id": ["A:1", "B:1", "B:2"], "gene_id": ["A", "B", "B"], "gene_name": ["geneA", "geneB", "geneB"],
        "gene_order": [0, 1, 1], "chrom": ["chr1", "chr2", "chr2"], "length": [500, 1_000, 3_000],
    })


# Forward and reverse-complement vectors per region: A's strands are orthogonal; B's first region is
# strand-invariant, its second flips sign.
FORWARD = np.array([E1, E1, E2])
REVERSE = np.array([E2, E1, -E2])


def test_gene_cosines_with_length_weighting(regions):
    genes = rc_stability(regions, FORWARD, REVERSE, "length_weighted").genes.set_index("gene_name")
    # A: cos(e1, e2) = 0; the average (e1 + e2)/2 is at 45°; it moves ‖(e2 − e1)/2‖ = √2/2.
    assert genes.loc["geneA", "cosine_forward_rc"] == pytest.approx(0.0, abs=1e-12)
    assert genes.loc["geneA", "cosine_forward_average"] == pytest.approx(1 / np.sqrt(2))
    assert genes.loc["geneA", "relative_change"] == pytest.approx(np.sqrt(2) / 2)
    # B: F = e1/4 + 3e2/4, R = e1/4 − 3e2/4, (F + R)/2 = e1/4: cos(F, R) = (1/16 − 9/16)/(10/16) = −0.8,
    # cos(F, avg) = 1/√10, relative change (3/4)/(√10/4) = 3/√10.
    assert genes.loc["geneB", "cosine_forward_rc"] == pytest.approx(-0.8)
    assert genes.loc["geneB", "cosine_forward_average"] == pytest.approx(1 / np.sqrt(10))
    assert genes.loc["geneB", "cosine_rc_average"] == pytest.approx(1 / np.sqrt(10))
    assert genes.loc["geneB", "relative_change"] == pytest.approx(3 / np.sqrt(10))
    assert genes.loc["geneB", "moved_rank"] == 1 and genes.loc["geneA", "moved_rank"] == 2
    assert most_moved(genes.reset_index(), 1)["gene_name"].tolist() == ["geneB"]
    assert genes["length_bp"].tolist() == [500, 4_000]
    assert genes["n_regions"].tolist() == [1, 2]


def test_mean_region_pooling_weighs_regions_equally(regions):
    genes = rc_stability(regions, FORWARD, REVERSE, "mean").genes.set_index("gene_name")
    # B: F = (e1 + e2)/2, R = (e1 − e2)/2: orthogonal; average e1/2 at 45° from F.
    assert genes.loc["geneB", "cosine_forward_rc"] == pytest.approx(0.0, abs=1e-12)
    assert genes.loc["geneB", "cosine_forward_average"] == pytest.approx(1 / np.sqrt(2))


def test_region_rows_and_summaries(regions):
    result = rc_stability(regions, FORWARD, REVERSE, "length_weighted")
    assert result.regions["cosine_forward_rc"].tolist() == pytest.approx([0.0, 1.0, -1.0])
    assert result.regions["relative_change"].tolist() == pytest.approx([np.sqrt(2) / 2, 0.0, 1.0])
    summary = result.summary.set_index(["grouping", "group"])
    assert summary.loc[("chromosome", "chr1"), "n_genes"] == 1
    assert summary.loc[("chromosome", "chr2"), "mean_cosine_forward_rc"] == pytest.approx(-0.8)
    assert summary.loc[("length", "0–1 kb"), "mean_cosine_forward_average"] == pytest.approx(1 / np.sqrt(2))
    assert summary.loc[("length", "3–10 kb"), "min_cosine_forward_rc"] == pytest.approx(-0.8)
    assert len(summary) == 4  # empty length bins are left out


def test_length_bins_are_half_open():
    bins = length_bin(pd.Series([0, 999, 1_000, 29_999, 30_000, 2_000_000])).astype(str).tolist()
    assert bins == ["0–1 kb", "0–1 kb", "1–3 kb", "10–30 kb", "30–100 kb", "≥ 100 kb"]


def test_rc_palindromic_sequence_has_forward_rc_cosine_one(tiny_encoder):
    sequences = ["GAATTC" * 30, "ACGT" * 200]  # each its own reverse complement; the second spans several windows
    strands = tiny_encoder.embed_strands(sequences, window_tokens=64, window_overlap=8)
    regions = pd.DataFrame({"region_id": ["P:1", "Q:1"], "gene_id": ["P", "Q"], "gene_name": ["P", "Q"],
                            "gene_order": [0, 1], "chrom": ["chr1", "chr1"], "length": [180, 800]})
    result = rc_stability(regions, strands.forward.vectors("mean"), strands.reverse.vectors("mean"), "length_weighted")
    for column in ("cosine_forward_rc", "cosine_forward_average", "cosine_rc_average"):
        assert result.genes[column].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert result.genes["relative_change"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
