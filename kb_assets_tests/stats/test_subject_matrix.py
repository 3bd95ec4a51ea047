"""Gene vectors → the subject matrix: manifest order, mean/max, and no gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kb_assets.stats.subject_matrix import feature_table, fill_subject_matrix, matrix_width

SUBJECTS = pd.Index(["s1", "s2"])
GENES = pd.Index(["gB", "gA"])  # manifest order: gB first


def _blocks():
    # Two chromosomes; REF rows are ignored; s2 arrives before s1.
    chr1 = pd.DataFrame({"subject_id": ["REF", "s2", "s1"], "gene_id": ["gA", "gA", "gA"]})
    chr2 = pd.DataFrame({"subject_id": ["s1", "s2"], "gene_id": ["gB", "gB"]})
    return [(chr1, np.array([[9, 9], [3, 4], [1, 2]], np.float32)),
            (chr2, np.array([[5, 6], [7, 0]], np.float32))]


@pytest.mark.parametrize("mode, expected", [
    ("concat", [[5, 6, 1, 2], [7, 0, 3, 4]]),
    ("mean", [[3, 4], [5, 2]]),
    ("max", [[5, 6], [7, 4]]),
])
def test_fill_by_mode(mode, expected):
    out = np.empty((2, matrix_width(2, 2, mode)), np.float32)
    fill_subject_matrix(out, SUBJECTS, GENES, _blocks(), mode)
    np.testing.assert_array_equal(out, expected)


def test_a_missing_gene_vector_is_an_error():
    blocks = _blocks()[:1]
    with pytest.raises(ValueError, match="gene gB of subject s1 arrived 0 times"):
        fill_subject_matrix(np.empty((2, 4), np.float32), SUBJECTS, GENES, blocks, "concat")


def test_feature_table_names_every_column():
    genes = pd.DataFrame({"gene_id": ["gB", "gA"], "gene_name": ["B", "A"]})
    features = feature_table(genes, 2, "concat")
    assert features[["gene_name", "dim"]].values.tolist() == [["B", 0], ["B", 1], ["A", 0], ["A", 1]]
    assert len(feature_table(genes, 2, "max")) == 2
