"""The factored subject matrix: every product equals the dense matrix's, and memory follows its structure."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from kb_assets.errors import InputError
from kb_assets.stats.subject_matrix import DenseSubjectMatrix, FactoredSubjectMatrix, GeneBlock
from kb_assets_tests.stats.conftest import factored_matrix


def _dense(matrix: FactoredSubjectMatrix) -> np.ndarray:
    """The oracle: row i built directly from the definition (gene blocks, code 0 for unlisted rows)."""
    out = np.empty((matrix.n_rows, matrix.n_features), np.float32)
    for gene in range(len(matrix.gene_ids)):
        block = matrix.gene_block(gene)
        codes = np.zeros(matrix.n_rows, np.int64)
        codes[block.rows] = block.codes
        out[:, gene * matrix.hidden_size:(gene + 1) * matrix.hidden_size] = block.vectors[codes]
    return out


def test_two_genes_by_hand():
    ref_a, alt_a = [1, 2], [5, 6]
    ref_b, alt_b1, alt_b2 = [0, 0], [1, 0], [0, 3]
    matrix = FactoredSubjectMatrix(3, [
        GeneBlock("A", np.array([ref_a, alt_a], np.float32), np.array([2]), np.array([1], np.int32)),
        GeneBlock("B", np.array([ref_b, alt_b1, alt_b2], np.float32), np.array([0, 2]), np.array([2, 1], np.int32)),
    ])
    expected = [[1, 2, 0, 3], [1, 2, 0, 0], [5, 6, 1, 0]]
    np.testing.assert_array_equal(matrix.dense_rows(np.arange(3)), expected)
    reordered = matrix.take_rows(np.array([2, 0]))
    np.testing.assert_array_equal(reordered.dense_rows(slice(None)), [expected[2], expected[0]])
    assert (matrix.shape, matrix.n_assignments, matrix.gene_ids) == ((3, 4), 3, ["A", "B"])
    np.testing.assert_array_equal(matrix.genes_to_subject("mean"), [[0.5, 2.5], [0.5, 1.0], [3.0, 3.0]])
    np.testing.assert_array_equal(matrix.genes_to_subject("max"), [[1, 3], [1, 2], [5, 6]])


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_products_equal_the_dense_matrix(dtype, rtol):
    matrix = factored_matrix(300, n_genes=5, hidden=12, seed=1)
    dense = _dense(matrix).astype(np.float64)
    rng = np.random.default_rng(0)
    W, Y = rng.normal(size=(matrix.n_features, 7)), rng.normal(size=(300, 7))
    offset = dense.mean(axis=0)
    centered = dense - offset
    np.testing.assert_allclose(matrix.matmat(W, offset, dtype), centered @ W, rtol=rtol, atol=rtol * 10)
    np.testing.assert_allclose(matrix.rmatmat(Y, offset, dtype), centered.T @ Y, rtol=rtol, atol=rtol * 10)
    np.testing.assert_allclose(matrix.matmat(W, None, dtype), dense @ W, rtol=rtol, atol=rtol * 10)
    blocks = list(matrix.matmat_blocks(W, offset, dtype, max_bytes=7 * 8 * 40))  # 40 or 80 rows per block
    assert len(blocks) > 3
    np.testing.assert_allclose(np.vstack([b for _, b in blocks]), centered @ W, rtol=rtol, atol=rtol * 10)


def test_moments_row_subsets_and_rank_bound_match_the_dense_matrix():
    matrix = factored_matrix(400, n_genes=6, hidden=8, distinct=(2, 7), seed=2)
    rows = np.sort(np.random.default_rng(1).choice(400, 150, replace=False))
    subset = matrix.take_rows(rows)
    dense = _dense(matrix)[rows].astype(np.float64)
    np.testing.assert_array_equal(subset.dense_rows(np.arange(150)), dense)
    means, squares = subset.column_moments()
    np.testing.assert_allclose(means, dense.mean(0), rtol=1e-13)
    np.testing.assert_allclose(squares, ((dense - dense.mean(0)) ** 2).sum(0), rtol=1e-10, atol=1e-12)
    # Few distinct vectors per gene: the bound is below H per gene and equals the true rank here.
    assert subset.rank_bound() == np.linalg.matrix_rank(dense - dense.mean(0)) < subset.n_features


def test_a_gene_every_subject_shares_has_exactly_zero_spread():
    matrix = factored_matrix(50, n_genes=2, hidden=4, seed=3)
    shared = np.full((2, 4), 0.1, np.float32)  # every subject carries code 1, identical to itself
    constant = FactoredSubjectMatrix(50, [matrix.gene_block(0), GeneBlock("C", shared, np.arange(50),
                                                                           np.ones(50, np.int32))])
    means, squares = constant.column_moments()
    assert (squares[4:] == 0).all() and (means[4:] == np.float32(0.1)).all()
    assert constant.rank_bound() == FactoredSubjectMatrix(50, [matrix.gene_block(0)]).rank_bound()  # C adds 0


def test_memory_follows_the_structure_not_subjects_times_features():
    matrix = factored_matrix(20000, n_genes=16, hidden=128, distinct=(5, 200), carriers=(0.01, 0.2), seed=4)
    dense_bytes = matrix.n_rows * matrix.n_features * 4  # 164 MB
    W = np.ones((matrix.n_features, 8), np.float32)
    Y = np.ones((matrix.n_rows, 8), np.float32)
    tracemalloc.start()
    matrix.matmat(W, matrix.reference)
    matrix.rmatmat(Y)
    matrix.column_moments()
    list(matrix.matmat_blocks(W, dtype=np.float64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert matrix.nbytes < dense_bytes / 50
    assert peak < dense_bytes / 50  # the outputs (subjects × 8) and per-gene products, nothing N × features


def test_dense_wrapper_takes_rows_lazily():
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    wrapped = DenseSubjectMatrix(X).take_rows(np.array([7, 2, 5])).take_rows(np.array([2, 0]))
    np.testing.assert_array_equal(wrapped.dense_rows(slice(None)), X[[5, 7]])
    np.testing.assert_allclose(wrapped.matmat(np.eye(4), X.mean(0)), X[[5, 7]] - X.mean(0))


@pytest.mark.parametrize("rows, codes, vectors, problem", [
    ([3, 1], [1, 1], None, "subject rows are not sorted, unique and within 0..9"),
    ([1, 12], [1, 1], None, "subject rows are not sorted, unique and within 0..9"),
    ([1, 2], [1, 2], None, r"codes must be 1..1 \(0, the reference, is implicit\)"),
    ([1], [1], [[0.0, np.nan], [1, 1]], "a gene vector holds a non-finite value"),
])
def test_bad_blocks_name_the_gene(rows, codes, vectors, problem):
    vectors = np.array(vectors if vectors is not None else [[0, 0], [1, 1]], np.float32)
    block = GeneBlock("ENSG7", vectors, np.array(rows), np.array(codes, np.int32))
    with pytest.raises(InputError, match=f"gene ENSG7: {problem}"):
        FactoredSubjectMatrix(10, [block])
