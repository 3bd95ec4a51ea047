"""The subject matrix (subjects × genes·H, genes in manifest order) kept factored, never formed whole.

Subjects share their gene vectors: per gene a few distinct vectors (row 0 the reference) and, for the subjects
that differ from the reference, which one they carry. Row i of the matrix is the concatenation over genes g of
``vectors_g[code_g(i)]`` (code 0 when subject i is not listed), so with x_ref the concatenated reference vectors

    X = 1·x_refᵀ + S·Δ

where S (subjects × all non-reference vectors) is a sparse 0/1 assignment with at most one 1 per gene and row,
and Δ stacks every non-reference vector minus its gene's reference (block-diagonal over genes). Every product a
PCA needs goes through that: X·W costs one small GEMM per gene (distinct vectors × H × k) and a sparse product
(assignments × k); nothing of size subjects × genes·H is allocated. At UK Biobank scale (470,000 subjects,
38 genes × 768) the dense matrix would be 55 GB; the factored one is the distinct vectors plus 12 bytes per
assignment.

`DenseSubjectMatrix` gives an ndarray or memmap the same interface, read in row blocks, so the PCA takes either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse
from sklearn.utils import gen_batches

from kb_assets.errors import InputError

_BLOCK_BYTES = 128 << 20  # bytes of dense rows (or dense row blocks of results) produced at once


@dataclass(frozen=True)
class GeneBlock:
    """One gene of the factored matrix, as the storage keeps it.

    ``vectors`` float32 [d, H], row 0 the reference (the vector of every subject not listed); ``rows`` int64 [m]
    the subject rows that differ from the reference (sorted, unique); ``codes`` int32 [m] which row of
    ``vectors`` (1..d-1) each of them carries.
    """

    gene_id: str
    vectors: np.ndarray
    rows: np.ndarray
    codes: np.ndarray


class FactoredSubjectMatrix:
    """Subjects × (genes·H) as per-gene distinct vectors and one sparse assignment (see the module docstring).

    Products take an ``offset`` (a feature vector subtracted from every row first: the column means when the PCA
    centers) and a ``dtype``: float32 for the large sketches, float64 where exactness rests on them. Float64
    products difference the float32 vectors exactly (vector − reference), so a gene every subject shares has
    exactly zero spread.
    """

    def __init__(self, n_rows: int, blocks: Sequence[GeneBlock], *, source: str | None = None):
        if not blocks:
            raise InputError(source, None, "the subject matrix has no gene", "build it from a non-empty gene set")
        hidden = blocks[0].vectors.shape[1] if blocks[0].vectors.ndim == 2 else -1
        columns, assigned_rows = [], []
        offsets = [0]
        for block in blocks:
            _check_block(block, n_rows, hidden, source)
            columns.append(block.codes.astype(np.int64) - 1 + offsets[-1])
            assigned_rows.append(block.rows)
            offsets.append(offsets[-1] + len(block.vectors) - 1)
        rows = np.concatenate(assigned_rows)
        cols = np.concatenate(columns)
        index_dtype = np.int32 if max(offsets[-1], n_rows, len(rows)) < np.iinfo(np.int32).max else np.int64
        assignment = scipy.sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows.astype(index_dtype), cols.astype(index_dtype))),
            shape=(n_rows, offsets[-1]),
        )
        self._init(
            assignment,
            [np.ascontiguousarray(b.vectors, dtype=np.float32) for b in blocks],
            [b.gene_id for b in blocks],
            np.array(offsets),
        )

    def _init(self, assignment: scipy.sparse.csr_matrix, vectors: list[np.ndarray], gene_ids: list[str],
              offsets: np.ndarray) -> None:
        self._assignment = assignment
        self._vectors = vectors
        self._offsets = offsets  # gene g's non-reference vectors are columns offsets[g]:offsets[g+1] of S
        self.gene_ids = list(gene_ids)
        self.hidden_size = vectors[0].shape[1]
        self.reference = np.concatenate([v[0] for v in vectors])  # x_ref, float32 [genes·H]

    @property
    def n_rows(self) -> int:
        return self._assignment.shape[0]

    @property
    def n_features(self) -> int:
        return len(self._vectors) * self.hidden_size

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, self.n_features

    @property
    def n_assignments(self) -> int:
        """Subject × gene pairs that differ from the reference (nonzeros of S)."""
        return self._assignment.nnz

    @property
    def nbytes(self) -> int:
        """Memory held: the distinct vectors and the sparse assignment."""
        s = self._assignment
        return sum(v.nbytes for v in self._vectors) + s.data.nbytes + s.indices.nbytes + s.indptr.nbytes

    def gene_block(self, gene: int) -> GeneBlock:
        """Gene number `gene` (manifest order) as rows and codes over this matrix's rows."""
        start, stop = self._offsets[gene], self._offsets[gene + 1]
        columns = self._assignment[:, start:stop].tocoo()
        order = np.argsort(columns.row, kind="stable")
        return GeneBlock(self.gene_ids[gene], self._vectors[gene], columns.row[order].astype(np.int64),
                         (columns.col[order] + 1).astype(np.int32))

    def take_rows(self, rows: np.ndarray) -> FactoredSubjectMatrix:
        """The listed rows, in that order (a fold's training subjects); vectors are shared, not copied."""
        rows = _checked_rows(rows, self.n_rows)
        subset = object.__new__(FactoredSubjectMatrix)
        subset._init(self._assignment[rows], self._vectors, self.gene_ids, self._offsets)
        return subset

    def column_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and sum of squared deviations over the rows (float64, two-pass per gene)."""
        n = self.n_rows
        counts = np.bincount(self._assignment.indices, minlength=self._assignment.shape[1])
        means = np.empty(self.n_features)
        squares = np.empty(self.n_features)
        for gene, vectors in enumerate(self._vectors):
            carried = counts[self._offsets[gene]:self._offsets[gene + 1]]
            weights = np.concatenate([[n - carried.sum()], carried]).astype(np.float64)
            values = vectors.astype(np.float64)
            columns = self._columns(gene)
            means[columns] = weights @ values / n
            values -= means[columns]
            squares[columns] = weights @ (values * values)
        return means, squares

    def rank_bound(self) -> int:
        """An upper bound on the rank of the centered rows: Σ over genes of min(distinct vectors present − 1, H)."""
        counts = np.bincount(self._assignment.indices, minlength=self._assignment.shape[1])
        bound = 0
        for gene in range(len(self._vectors)):
            carried = counts[self._offsets[gene]:self._offsets[gene + 1]]
            present = np.count_nonzero(carried) + (carried.sum() < self.n_rows)  # + the reference, if carried
            bound += min(present - 1, self.hidden_size)
        return max(bound, 0)

    def matmat(self, W: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
        """(X − 1·offsetᵀ)·W, W features × k: the per-gene products Δ_g·W_g, then S times their stack."""
        stacked, shift = self._products(W, offset, dtype)
        out = self._assignment.astype(dtype, copy=False) @ stacked
        out += shift
        return out

    def matmat_blocks(self, W: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32,
                      max_bytes: int = _BLOCK_BYTES) -> Iterator[tuple[slice, np.ndarray]]:
        """`matmat` in row blocks of about `max_bytes` (the per-gene products are formed once)."""
        stacked, shift = self._products(W, offset, dtype)
        assignment = self._assignment.astype(dtype, copy=False)
        for rows in gen_batches(self.n_rows, max(1, max_bytes // (stacked.shape[1] * stacked.itemsize))):
            block = assignment[rows] @ stacked
            block += shift
            yield rows, block

    def rmatmat(self, Y: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
        """(X − 1·offsetᵀ)ᵀ·Y, Y rows × k: Sᵀ·Y, then Δ_gᵀ times its gene's part."""
        Y = np.asarray(Y, dtype=dtype)
        if Y.shape[0] != self.n_rows:
            raise ValueError(f"Y has {Y.shape[0]} rows; the matrix has {self.n_rows}")
        gathered = self._assignment.T.astype(dtype, copy=False) @ Y
        out = np.outer(self._shift(offset, dtype), Y.sum(axis=0, dtype=dtype))
        for gene in range(len(self._vectors)):
            out[self._columns(gene)] += self._deltas(gene, dtype).T @ gathered[self._offsets[gene]:
                                                                               self._offsets[gene + 1]]
        return out

    def dense_rows(self, rows: np.ndarray | slice) -> np.ndarray:
        """The listed rows as a dense float32 array [len(rows), genes·H] (a block of rows at a time)."""
        rows = np.arange(self.n_rows)[rows] if isinstance(rows, slice) else _checked_rows(rows, self.n_rows)
        out = np.empty((len(rows), self.n_features), dtype=np.float32)
        out[:] = self.reference
        picked = self._assignment[rows].tocoo()
        gene = np.searchsorted(self._offsets, picked.col, side="right") - 1
        for g in np.unique(gene):
            at = gene == g
            codes = picked.col[at] - self._offsets[g] + 1
            out[picked.row[at], self._columns(g)] = self._vectors[g][codes]
        return out

    def genes_to_subject(self, mode: Literal["mean", "max"], out: np.ndarray | None = None) -> np.ndarray:
        """Rows × H: the mean or the elementwise max of each subject's gene vectors (into `out` if given)."""
        if mode not in ("mean", "max"):
            raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
        out = np.empty((self.n_rows, self.hidden_size), np.float32) if out is None else out
        n_genes = len(self._vectors)
        if mode == "mean":
            # mean_g vectors_g[code] = mean of the references + S·(Δ stacked per gene)/genes.
            deltas = np.vstack([self._deltas(g, np.float64) for g in range(n_genes)]) / n_genes
            references = np.mean([v[0].astype(np.float64) for v in self._vectors], axis=0)
            for rows in gen_batches(self.n_rows, max(1, _BLOCK_BYTES // (self.hidden_size * 8))):
                out[rows] = self._assignment[rows] @ deltas + references
            return out
        for rows in gen_batches(self.n_rows, max(1, _BLOCK_BYTES // (self.n_features * 4))):
            dense = self.dense_rows(rows)
            out[rows] = dense.reshape(len(dense), n_genes, self.hidden_size).max(axis=1)
        return out

    def _columns(self, gene: int) -> slice:
        return slice(gene * self.hidden_size, (gene + 1) * self.hidden_size)

    def _deltas(self, gene: int, dtype: type) -> np.ndarray:
        vectors = self._vectors[gene].astype(dtype, copy=False)
        return vectors[1:] - vectors[0]

    def _shift(self, offset: np.ndarray | None, dtype: type) -> np.ndarray:
        """x_ref − offset, differenced in float64."""
        reference = self.reference.astype(np.float64)
        return (reference if offset is None else reference - offset).astype(dtype)

    def _products(self, W: np.ndarray, offset: np.ndarray | None, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        """(Δ·W stacked over genes [non-reference vectors × k], (x_ref − offset)ᵀ·W [k])."""
        W = np.asarray(W, dtype=dtype)
        if W.ndim != 2 or W.shape[0] != self.n_features:
            raise ValueError(f"W has shape {W.shape}; expected ({self.n_features}, k)")
        stacked = np.empty((self._assignment.shape[1], W.shape[1]), dtype=dtype)
        for gene in range(len(self._vectors)):
            stacked[self._offsets[gene]:self._offsets[gene + 1]] = self._deltas(gene, dtype) @ W[self._columns(gene)]
        return stacked, self._shift(offset, dtype) @ W


class DenseSubjectMatrix:
    """An ndarray or memmap (subjects × features) with the factored matrix's interface, read in row blocks.

    ``rows`` selects and orders the subjects used (a fold's training rows) without copying the matrix.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray | None = None):
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (subjects × features), got shape {X.shape}")
        self._X = X
        self._rows = np.arange(X.shape[0]) if rows is None else _checked_rows(rows, X.shape[0])

    @property
    def n_rows(self) -> int:
        return len(self._rows)

    @property
    def n_features(self) -> int:
        return self._X.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, self.n_features

    def take_rows(self, rows: np.ndarray) -> DenseSubjectMatrix:
        return DenseSubjectMatrix(self._X, self._rows[_checked_rows(rows, self.n_rows)])

    def rank_bound(self) -> int:
        return min(self.n_rows, self.n_features)

    def column_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and sum of squared deviations, one float64 pass.

        Blocks are merged with Chan et al.'s pairwise update, so features whose mean dwarfs their spread (common:
        most subjects carry the reference sequence of a gene) keep their variance, and a constant feature's sum
        of squares is exactly 0 (every block mean equals its value).
        """
        count = 0
        means = np.zeros(self.n_features)
        squares = np.zeros(self.n_features)
        for _, values in self._blocks(np.float64):
            block_means = values.mean(axis=0)
            values -= block_means
            size = len(values)
            delta = block_means - means
            squares += np.einsum("ij,ij->j", values, values) + delta**2 * count * size / (count + size)
            means += delta * size / (count + size)
            count += size
        return means, squares

    def matmat(self, W: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
        W = np.asarray(W, dtype=dtype)
        out = np.empty((self.n_rows, W.shape[1]), dtype=dtype)
        for block, values in self._blocks(dtype, offset):
            out[block] = values @ W
        return out

    def matmat_blocks(self, W: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32,
                      max_bytes: int = _BLOCK_BYTES) -> Iterator[tuple[slice, np.ndarray]]:
        W = np.asarray(W, dtype=dtype)
        for block, values in self._blocks(dtype, offset, max_bytes):
            yield block, values @ W

    def rmatmat(self, Y: np.ndarray, offset: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
        Y = np.asarray(Y, dtype=dtype)
        out = np.zeros((self.n_features, Y.shape[1]), dtype=dtype)
        for block, values in self._blocks(dtype, offset):
            out += values.T @ Y[block]
        return out

    def dense_rows(self, rows: np.ndarray | slice) -> np.ndarray:
        return np.asarray(self._X[self._rows[rows]], dtype=np.float32)

    def _blocks(self, dtype: type, offset: np.ndarray | None = None,
                max_bytes: int = _BLOCK_BYTES) -> Iterator[tuple[slice, np.ndarray]]:
        offset = None if offset is None else np.asarray(offset, dtype=dtype)
        for rows in gen_batches(self.n_rows, max(1, max_bytes // max(1, self.n_features * 4))):
            values = np.asarray(self._X[self._rows[rows]], dtype=dtype)
            if offset is not None:
                values -= offset
            yield rows, values


SubjectMatrix = FactoredSubjectMatrix | DenseSubjectMatrix


def as_subject_matrix(X: np.ndarray | SubjectMatrix) -> SubjectMatrix:
    """A factored or dense subject matrix as it is; an ndarray or memmap wrapped in `DenseSubjectMatrix`."""
    return X if isinstance(X, (FactoredSubjectMatrix, DenseSubjectMatrix)) else DenseSubjectMatrix(X)


def _check_block(block: GeneBlock, n_rows: int, hidden: int, source: str | None) -> None:
    record = f"gene {block.gene_id}"
    vectors, rows, codes = block.vectors, np.asarray(block.rows), np.asarray(block.codes)
    fix = "rebuild the factored subject matrix from the gene embeddings"
    if vectors.ndim != 2 or len(vectors) < 1 or vectors.shape[1] != hidden:
        raise InputError(source, record, f"vectors have shape {vectors.shape}; expected [distinct ≥ 1, {hidden}]",
                         "give every gene its reference vector first, all of one width")
    if not np.isfinite(vectors).all():
        raise InputError(source, record, "a gene vector holds a non-finite value (NaN or inf)",
                         "rebuild the gene embeddings from finite model outputs")
    if rows.shape != codes.shape or rows.ndim != 1:
        raise InputError(source, record, f"{rows.shape} rows but {codes.shape} codes", fix)
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_rows or (np.diff(rows) <= 0).any()):
        raise InputError(source, record, f"subject rows are not sorted, unique and within 0..{n_rows - 1}", fix)
    if len(codes) and (codes.min() < 1 or codes.max() >= len(vectors)):
        raise InputError(source, record, f"codes must be 1..{len(vectors) - 1} (0, the reference, is implicit)", fix)


def _checked_rows(rows: np.ndarray, n_rows: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= n_rows)):
        raise ValueError(f"rows must be a 1-D index into {n_rows} rows")
    return rows

