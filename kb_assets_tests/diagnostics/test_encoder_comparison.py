"""compare_encoders on hand-built factored matrices: distances against a dense oracle, rank agreement by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from kb_assets.diagnostics import ALL_GENES, EncoderOutputs, compare_encoders
from kb_assets.encoders.windows import ModelWindow, mirrored_window
from kb_assets.errors import InputError
from kb_assets.stats.subject_matrix import GeneBlock

SUBJECTS = [f"s{i}" for i in range(6)]


def outputs(blocks: list[GeneBlock], subjects=SUBJECTS) -> EncoderOutputs:
    genes = [block.gene_id for block in blocks]
    rc = pd.DataFrame({"gene_id": genes, "gene_name": [g.lower() for g in genes], "chrom": "chr1",
                       "cosine_forward_rc": 0.9})
    pooling = pd.DataFrame({"gene_id": genes, "strategy_a": "mean", "strategy_b": "max", "cosine": 0.8})
    return EncoderOutputs(rc, pooling, subjects, blocks)


def dense(block: GeneBlock, n: int) -> np.ndarray:
    codes = np.zeros(n, np.int64)
    codes[block.rows] = block.codes
    return block.vectors[codes].astype(np.float64)


def random_blocks(rng, hidden: int) -> list[GeneBlock]:
    blocks = []
    for gene in ("G1", "G2"):
        rows = np.sort(rng.choice(len(SUBJECTS), 4, replace=False))
        blocks.append(GeneBlock(gene, rng.normal(size=(3, hidden)).astype(np.float32), rows,
                                rng.integers(1, 3, size=4).astype(np.int32)))
    return blocks


def test_rank_agreement_against_dense_distances():
    rng = np.random.default_rng(1)
    a, b = random_blocks(rng, 4), random_blocks(rng, 3)
    result = compare_encoders({"a": outputs(a), "b": outputs(b)}, max_subjects=10)
    upper = np.triu_indices(len(SUBJECTS), k=1)

    def squared(blocks, genes):
        x = np.hstack([dense(block, len(SUBJECTS)) for block in blocks if block.gene_id in genes])
        return ((x[:, None] - x[None]) ** 2).sum(-1)[upper]

    rows = result.agreement.set_index("gene_id")["spearman_rho"]
    for gene in ("G1", "G2"):
        assert rows[gene] == pytest.approx(spearmanr(squared(a, {gene}), squared(b, {gene})).statistic)
    assert rows[ALL_GENES] == pytest.approx(spearmanr(squared(a, {"G1", "G2"}), squared(b, {"G1", "G2"})).statistic)
    assert set(result.genes["encoder"]) == {"a", "b"} and len(result.genes) == 4


def test_an_encoder_agrees_with_a_scaled_copy_and_subjects_are_capped():
    rng = np.random.default_rng(2)
    blocks = random_blocks(rng, 4)
    scaled = [GeneBlock(b.gene_id, b.vectors * 3, b.rows, b.codes) for b in blocks]
    result = compare_encoders({"a": outputs(blocks), "b": outputs(scaled)}, max_subjects=5)
    assert result.subjects == SUBJECTS[:5]
    np.testing.assert_allclose(result.agreement["spearman_rho"].dropna(), 1.0)


def test_nothing_shared_is_one_error_naming_the_odd_subject_matrix():
    rng = np.random.default_rng(3)
    a = outputs(random_blocks(rng, 2))
    b = replace(outputs(random_blocks(rng, 2), ["x", "y"]), source="warehouse/b_subject_matrix")
    with pytest.raises(InputError, match=r"^warehouse/b_subject_matrix: subject_matrix of b: the encoders' subject "
                                         r"matrices share 2 genes and 0 subjects \(a: 2 genes, 6 subjects; b: 2 "
                                         r"genes, 2 subjects\): nothing to compare\. Fix: materialize b's "
                                         "subject_matrix again"):
        compare_encoders({"a": a, "b": b}, 10)


def test_a_mirrored_window_reverses_and_complements_its_content_and_counted_span():
    complement = {1: 4, 2: 3, 3: 2, 4: 1, 9: 9}
    window = ModelWindow((7, 1, 1, 2, 9, 3, 8), count_start=2, count_end=4)  # prefix 7, suffix 8
    mirrored = mirrored_window(window, complement, 1, 1)
    assert mirrored.input_ids == (7, 2, 9, 3, 4, 4, 8)
    # Counted content positions 1..2 (ids 1, 2) sit at 2..3 of the five content tokens once mirrored.
    assert (mirrored.count_start, mirrored.count_end) == (3, 5)
    assert [mirrored.input_ids[i] for i in range(3, 5)] == [complement[t] for t in reversed(window.input_ids[2:4])]
