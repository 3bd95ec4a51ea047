"""Residualized PCA of the subject matrix, fitted on a training fold and applied to any subjects.

Recipe per fold (training subjects only): z-score every feature → residualize on the covariates (OLS with
intercept) → PCA; or, with ``order="pca_then_residualize"``, z-score → PCA → residualize the PC scores.

The subject matrix (20,000 × 29,184 float32 is 2.3 GB; 100,000 subjects is 12 GB) is never copied whole: it is
read in row blocks, typically from a ``np.memmap``, and the fitted rows are chosen by index. The PCA is a
randomized SVD (Halko, Martinsson & Tropp 2011, algorithm 4.4 with LU-normalized power iterations, as in
scikit-learn) of the implicit matrix A = P·Z, where Z is the z-scored training block and P removes the
covariates (or only the mean); each power iteration is one pass of A·Ω and one of Aᵀ·Y. Those passes run in
float32; everything the result's exactness rests on (means, scales, OLS coefficients, the final SVD and every
transform) is float64, so training scores are orthogonal to the covariates to ~1e-12.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.linalg
from threadpoolctl import threadpool_limits

from kb_assets.errors import InputError

ORDERS = ("residualize_then_pca", "pca_then_residualize")
Order = Literal["residualize_then_pca", "pca_then_residualize"]

_BLOCK_BYTES = 128 << 20  # float32 bytes of X read at once; float64 blocks are twice this
_OVERSAMPLES = 16  # extra random directions beyond n_components (Halko et al. §4.2)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Projector:
    """A fitted z-score → residualize → PCA map (or z-score → PCA → residualize), saved and loaded as .npz.

    ``coefficients`` are OLS betas on the design columns ``covariate_names``: of the z-scored features
    (shape design × features) for residualize_then_pca, of the PC scores (design × components) otherwise.
    ``explained_variance_ratio`` is each component's share of the total variance of the matrix the PCA saw
    (residualized z-scores, or z-scores).
    """

    means: np.ndarray
    scales: np.ndarray
    coefficients: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    order: str
    covariate_names: list[str]
    n_train: int
    n_components_requested: int

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def transform(self, X: np.ndarray, design: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Scores (subjects × n_components, float64) of the rows of X (all, or those listed in `rows`).

        `design` has one row per scored subject and the columns of ``covariate_names``.
        """
        rows = _check_rows(X, rows)
        design = self._check_design(X, design, rows)
        # z·Cᵀ − d·(B·Cᵀ) equals (z − d·B)·Cᵀ without a second subjects × features temporary.
        removed = self.coefficients @ self.components.T if self.order == ORDERS[0] else self.coefficients
        scores = np.empty((len(rows), self.n_components))
        for block, z in _blocks(X, rows, np.float64, self.means, self.scales):
            scores[block] = z @ self.components.T - design[block] @ removed
        return scores

    def residuals(self, X: np.ndarray, design: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The z-scored features with the covariate fit removed (the matrix residualize_then_pca decomposes)."""
        if self.order != ORDERS[0]:
            raise ValueError("residuals are features only with order='residualize_then_pca'")
        rows = _check_rows(X, rows)
        design = self._check_design(X, design, rows)
        out = np.empty((len(rows), X.shape[1]))
        for block, z in _blocks(X, rows, np.float64, self.means, self.scales):
            out[block] = z - design[block] @ self.coefficients
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the projector as an uncompressed .npz of plain arrays (no pickled objects)."""
        path = Path(path)
        with open(path, "wb") as handle:
            np.savez(
                handle,
                means=self.means,
                scales=self.scales,
                coefficients=self.coefficients,
                components=self.components,
                explained_variance_ratio=self.explained_variance_ratio,
                order=np.array(self.order),
                covariate_names=np.array(self.covariate_names, dtype=str),
                n_train=np.array(self.n_train),
                n_components_requested=np.array(self.n_components_requested),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Projector":
        """Read a projector written by `save`."""
        with np.load(path, allow_pickle=False) as saved:
            return cls(
                means=saved["means"],
                scales=saved["scales"],
                coefficients=saved["coefficients"],
                components=saved["components"],
                explained_variance_ratio=saved["explained_variance_ratio"],
                order=str(saved["order"]),
                covariate_names=[str(name) for name in saved["covariate_names"]],
                n_train=int(saved["n_train"]),
                n_components_requested=int(saved["n_components_requested"]),
            )

    def _check_design(self, X: np.ndarray, design: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if X.shape[1] != len(self.means):
            raise ValueError(f"X has {X.shape[1]} features; the projector was fitted on {len(self.means)}")
        design = np.asarray(design, dtype=np.float64)
        if design.shape != (len(rows), len(self.covariate_names)):
            raise ValueError(
                f"design is {design.shape}; expected ({len(rows)}, {len(self.covariate_names)}) "
                f"with columns {self.covariate_names}"
            )
        return design


def fit_projector(
    X_train: np.ndarray,
    covariates_train: np.ndarray,
    n_components: int = 512,
    order: Order = "residualize_then_pca",
    seed: int = 0,
    *,
    rows: np.ndarray | None = None,
    covariate_names: list[str] | None = None,
    power_iterations: int = 4,
) -> Projector:
    """Fit the projector on the training subjects: the rows of `X_train`, or with `rows`, those rows of it.

    `covariates_train` is the OLS design (one row per training subject, an intercept column among its columns;
    see `design_matrix`). The number of components is at most the rank the data can have: training subjects
    minus the design's rank (minus 1 for pca_then_residualize) and non-constant features; a reduction is
    logged and visible as ``n_components < n_components_requested``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}")
    rows = _check_rows(X_train, rows)
    n = len(rows)
    design = np.asarray(covariates_train, dtype=np.float64)
    if design.ndim != 2 or design.shape[0] != n:
        raise ValueError(f"design is {design.shape}; expected {n} rows, one per training subject")
    names = covariate_names if covariate_names is not None else [f"x{i}" for i in range(design.shape[1])]
    if len(names) != design.shape[1]:
        raise ValueError(f"{len(names)} covariate names for {design.shape[1]} design columns")
    unfitted = [name for name, column in zip(names, design.T) if not column.any()]
    if unfitted:
        log.warning("design column(s) %s are 0 for all %d training subjects (a level absent from this fold): "
                    "their effect cannot be removed from the subjects who have it", ", ".join(unfitted), n)
    design_basis = _column_basis(design)
    if not np.allclose(design_basis @ (design_basis.T @ np.ones(n)), 1.0, atol=1e-8):
        raise ValueError("the design needs an intercept column (design_matrix adds one)")

    means, scales, design_scores = _feature_stats(X_train, rows, design_basis)
    z_sumsq = np.where(scales > 0, n, 0.0)  # Σ z² per feature; constant features are 0
    scales = np.where(scales > 0, scales, 1.0)
    design_scores /= scales  # Uᵀ·Z: the design basis against the z-scored features
    if order == ORDERS[0]:
        basis = design_basis
        total = z_sumsq.sum() - np.sum(design_scores**2)
    else:
        basis = np.full((n, 1), n**-0.5)
        total = z_sumsq.sum()
    max_rank = int(min(n - basis.shape[1], np.count_nonzero(z_sumsq)))
    if max_rank < 1:
        raise InputError(
            None, f"{n} training subjects", "too few subjects (or no varying feature) to fit any component",
            "use more subjects than covariate columns",
        )
    k = min(n_components, max_rank)
    if k < n_components:
        log.warning("n_components reduced from %d to %d: %d training subjects, rank limit %d",
                    n_components, k, n, max_rank)

    operator = _ProjectedMatrix(X_train, rows, means, scales, basis)
    singular_values, components = operator.top_singular(k, power_iterations, seed)
    if order == ORDERS[0]:
        # OLS betas B = D⁺·Z; D = U·(Uᵀ·D) with U orthonormal, so D⁺·Z = (Uᵀ·D)⁺·(Uᵀ·Z). The minimum-norm
        # solution also covers a rank-deficient design (a batch level absent from this training fold).
        coefficients = np.linalg.pinv(design_basis.T @ design) @ design_scores
    else:
        pc_scores = np.empty((n, k))
        for block, z in _blocks(X_train, rows, np.float64, means, scales):
            pc_scores[block] = z @ components.T
        coefficients = np.linalg.lstsq(design, pc_scores, rcond=None)[0]
    return Projector(
        means=means,
        scales=scales,
        coefficients=coefficients,
        components=components,
        explained_variance_ratio=singular_values**2 / total,
        order=order,
        covariate_names=list(names),
        n_train=n,
        n_components_requested=n_components,
    )


@dataclass(frozen=True)
class FoldResult:
    """One fold: the projector fitted on its training subjects, and scores of training and held-out subjects."""

    fold: int
    projector: Projector
    train_ids: np.ndarray
    train_scores: np.ndarray
    heldout_ids: np.ndarray
    heldout_scores: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Rows (fold, subject_id, split, pc_1..pc_k), training subjects first."""
        scores = np.vstack([self.train_scores, self.heldout_scores])
        frame = pd.DataFrame(scores, columns=[f"pc_{i}" for i in range(1, scores.shape[1] + 1)])
        frame.insert(0, "split", ["train"] * len(self.train_ids) + ["heldout"] * len(self.heldout_ids))
        frame.insert(0, "subject_id", np.concatenate([self.train_ids, self.heldout_ids]).astype(str))
        frame.insert(0, "fold", self.fold)
        return frame


def fit_fold_projections(
    X: np.ndarray,
    subject_ids: list[str] | np.ndarray,
    design: np.ndarray,
    folds_df: pd.DataFrame,
    n_components: int = 512,
    order: Order = "residualize_then_pca",
    seed: int = 0,
    covariate_names: list[str] | None = None,
) -> Iterator[FoldResult]:
    """For each fold: fit on the other folds' subjects, score everyone; yielded one fold at a time.

    `X` rows, `subject_ids` and `design` rows are the same subjects in the same order; `folds_df` (from
    `assign_folds`) must cover exactly those subjects.
    """
    ids = np.asarray(subject_ids, dtype=str)
    design = np.asarray(design, dtype=np.float64)
    if X.shape[0] != len(ids) or design.shape[0] != len(ids):
        raise ValueError(f"X has {X.shape[0]} rows, design {design.shape[0]}, subject_ids {len(ids)}")
    fold_of = dict(zip(folds_df["subject_id"].astype(str), folds_df["fold"].astype(int)))
    unassigned = [s for s in ids if s not in fold_of]
    extra = set(fold_of) - set(ids)
    if unassigned or extra:
        raise InputError(
            None,
            f"subjects {', '.join(unassigned[:5] or sorted(extra)[:5])}",
            f"the subject matrix and the fold assignment disagree ({len(unassigned)} subject(s) without a fold, "
            f"{len(extra)} fold subject(s) not in the matrix)",
            "assign the folds from the same covariates table the subject matrix was built for",
        )
    folds = np.array([fold_of[s] for s in ids])
    for fold in np.unique(folds):
        train = np.flatnonzero(folds != fold)
        heldout = np.flatnonzero(folds == fold)
        projector = fit_projector(
            X, design[train], n_components, order, seed, rows=train, covariate_names=covariate_names
        )
        yield FoldResult(
            fold=int(fold),
            projector=projector,
            train_ids=ids[train],
            train_scores=projector.transform(X, design[train], rows=train),
            heldout_ids=ids[heldout],
            heldout_scores=projector.transform(X, design[heldout], rows=heldout),
        )


class _ProjectedMatrix:
    """A = P·Z on the listed rows of X, never formed: Z = (X − means)/scales, P = I − U·Uᵀ (U orthonormal)."""

    def __init__(self, X: np.ndarray, rows: np.ndarray, means: np.ndarray, scales: np.ndarray, basis: np.ndarray):
        self.X, self.rows, self.means, self.scales = X, rows, means, scales
        self.basis = basis.astype(np.float32)

    def _project_out(self, Y: np.ndarray) -> np.ndarray:
        return Y - self.basis @ (self.basis.T @ Y)

    def matmat(self, W: np.ndarray) -> np.ndarray:
        """A·W, W features × m."""
        out = np.empty((len(self.rows), W.shape[1]), dtype=np.float32)
        for block, z in _blocks(self.X, self.rows, np.float32, self.means, self.scales):
            out[block] = z @ W
        return self._project_out(out)

    def rmatmat(self, Y: np.ndarray) -> np.ndarray:
        """Aᵀ·Y, Y subjects × m."""
        Y = self._project_out(Y)
        out = np.zeros((self.X.shape[1], Y.shape[1]), dtype=np.float32)
        for block, z in _blocks(self.X, self.rows, np.float32, self.means, self.scales):
            out += z.T @ Y[block]
        return out

    def top_singular(self, k: int, power_iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest singular values and right singular vectors (rows, float64, orthonormal) of A."""
        n, n_features = len(self.rows), self.X.shape[1]
        size = min(k + _OVERSAMPLES, n, n_features)
        sketch = np.random.default_rng(seed).standard_normal((n_features, size), dtype=np.float32)
        for _ in range(power_iterations):
            sketch = _lu_normalized(self.matmat(sketch))
            sketch = _lu_normalized(self.rmatmat(sketch))
        with threadpool_limits(1):
            range_basis = scipy.linalg.qr(self.matmat(sketch), mode="economic", check_finite=False)[0]
        # Rayleigh–Ritz in float64: Aᵀ·Q = Q₂·R, R = U·S·Vᵀ, so Qᵀ·A = V·S·(Q₂·U)ᵀ; the rows of (Q₂·U)ᵀ are
        # orthonormal to rounding error, and the tall QR is far cheaper than an SVD of the wide Qᵀ·A.
        projected = self.rmatmat(range_basis).astype(np.float64)
        with threadpool_limits(1):
            q, r = scipy.linalg.qr(projected, mode="economic", check_finite=False)
            u, singular_values, _ = np.linalg.svd(r)
        components = (q @ u[:, :k]).T
        # A component's sign is arbitrary; fix it so its largest loading is positive, run to run.
        largest = components[np.arange(k), np.argmax(np.abs(components), axis=1)]
        return singular_values[:k], components * np.sign(largest)[:, None]


def _lu_normalized(matrix: np.ndarray) -> np.ndarray:
    """The permuted L factor: a well-conditioned basis of the same column space, cheaper than QR.

    Factorizations of the thin sketches run on one BLAS thread (here and in `top_singular`): threaded LAPACK
    gains little on these shapes and slows down tenfold when another process holds a core.
    """
    with threadpool_limits(1):
        return scipy.linalg.lu(matrix, permute_l=True, check_finite=False)[0]


def _check_rows(X: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (subjects × features), got shape {X.shape}")
    if rows is None:
        return np.arange(X.shape[0])
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= X.shape[0]):
        raise ValueError(f"rows must index X's {X.shape[0]} rows")
    return rows


def _blocks(
    X: np.ndarray, rows: np.ndarray, dtype: type, means: np.ndarray | None = None, scales: np.ndarray | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """(positions in `rows`, the rows of X there as `dtype`), z-scored when means and scales are given."""
    step = max(1, _BLOCK_BYTES // max(1, X.shape[1] * 4))
    if means is not None:
        means, inverse_scales = means.astype(dtype), (1.0 / scales).astype(dtype)
    for start in range(0, len(rows), step):
        block = slice(start, min(start + step, len(rows)))
        values = np.asarray(X[rows[block]], dtype=dtype)
        if means is not None:
            values -= means
            values *= inverse_scales
        yield block, values


def _feature_stats(X: np.ndarray, rows: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature means and population SDs (0 for constant features), and Uᵀ·(X − means), in one float64 pass.

    Blocks are merged with Chan et al.'s pairwise update, so features whose mean dwarfs their spread (common:
    most subjects carry the reference sequence of a gene) keep their variance exactly.
    """
    count = 0
    means = np.zeros(X.shape[1])
    sum_squares = np.zeros(X.shape[1])
    shift = None  # a provisional centre, so Uᵀ·X is accumulated without cancellation
    basis_scores = np.zeros((basis.shape[1], X.shape[1]))
    for block, values in _blocks(X, rows, np.float64):
        block_means = values.mean(axis=0)
        values -= block_means
        shift = block_means if shift is None else shift
        basis_block = basis[block]
        basis_scores += basis_block.T @ values + np.outer(basis_block.sum(axis=0), block_means - shift)
        size = len(values)
        delta = block_means - means
        sum_squares += np.einsum("ij,ij->j", values, values) + delta**2 * count * size / (count + size)
        means += delta * size / (count + size)
        count += size
    if not (np.isfinite(means).all() and np.isfinite(sum_squares).all()):
        feature = int(np.flatnonzero(~(np.isfinite(means) & np.isfinite(sum_squares)))[0])
        raise InputError(
            None, f"feature column {feature}", "the subject matrix holds a non-finite value (NaN or inf)",
            "rebuild the subject matrix from finite gene embeddings",
        )
    basis_scores -= np.outer(basis.sum(axis=0), means - shift)
    # A constant feature's sum of squares is exactly 0: every block mean equals its value.
    return means, np.sqrt(sum_squares / count), basis_scores


def _column_basis(matrix: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column space (thin SVD, numerically zero directions dropped)."""
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    return u[:, s > s[0] * max(matrix.shape) * np.finfo(np.float64).eps]

