"""The permutation null of the gene–brain alignment, batched: many permutations refitted at once.

Under a permutation of the training subjects' brain rows, the gene side (gene PCs, their inner-split
covariances and eigenvectors, the held-out gene PCs) does not change: it is computed once per fold. What the
brain data reach is refitted for every permutation, exactly as for the observed data:

* brain residualization (Freedman & Lane 1983): the permuted data are the covariate fit plus the permuted
  residuals, ``Y* = D·β̂ + P·E``; refitting OLS on them gives ``β* = β̂ + D⁺·P·E`` and residuals ``R·P·E``
  (R = I − U·Uᵀ, U an orthonormal basis of the design). Everything needed is ``Uᵀ·P·E`` (design × features);
  ``(P·E)ᵀ(P·E) = EᵀE`` whatever P, so the residual covariance costs no pass over the subjects;
* standardization and brain PCA of the residuals (eigendecomposition of their correlation matrix);
* ridge CCA (cca-zoo's ``RidgeCCA``: each view whitened by ``(1 − c)·Cov + c·I``, then the SVD of the whitened
  cross-covariance), its gene-view shrinkage chosen by inner K-fold CV with cca-zoo's score (the mean
  validation canonical correlation), then refitted on all training subjects;
* the label model (``RidgeCV``'s leave-one-out choice of the penalty, one target per permutation).

cca-zoo fits one pairing at a time and whitens the gene view again for every fit (5 × grid fits per
permutation), which at 20,000 subjects × 512 gene PCs × 1,000 permutations is days; here the shared gene side is
factored out and the permutations go through a few large matrix products. Tests check every null statistic
against the unbatched pipeline run with cca-zoo and scikit-learn on the explicitly permuted data.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

# Factorizations (eigh, SVD) run on one BLAS thread: on shared cores threaded OpenBLAS runs them 5–50× slower
# (measured: a 512 × 512 eigh 3.7 s vs 0.17 s, a 2,000 × 512 SVD 13 s vs 0.3 s, with 2 cores and load 9), as
# kb_assets.stats.projection found; the large products over subjects stay threaded.
_SINGLE_THREADED = 1


def view_scale(columns: np.ndarray) -> float:
    """√(mean column variance): views are divided by it before the ridge so that a shrinkage c means the same
    blend of covariance and identity whatever the view's units."""
    scale = float(np.sqrt(np.mean(np.var(columns, axis=0, ddof=1))))
    return scale if scale > 0 else 1.0


def whitening(covariance: np.ndarray, shrinkage: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvectors, 1/√((1 − c)·λ + c)) of a covariance, directions below its numerical rank given weight 0.

    The rank cut is cca-zoo's ``svd_whiten``: λ > λ_max · p · eps. Works on stacks (…, p, p); `shrinkage` is a
    number or one per stacked matrix.
    """
    values, vectors = np.linalg.eigh(covariance)
    p = covariance.shape[-1]
    kept = values > values.max(axis=-1, keepdims=True) * p * np.finfo(float).eps
    c = np.asarray(shrinkage, dtype=float)[..., None]
    regularized = (1.0 - c) * values + c
    weights = np.where(kept, 1.0 / np.sqrt(np.where(kept, regularized, 1.0)), 0.0)
    return vectors, weights


def pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of x and y (…, n, m) → (…, m); 0 where one is constant."""
    x = x - x.mean(axis=-2, keepdims=True)
    y = y - y.mean(axis=-2, keepdims=True)
    numerator = np.sum(x * y, axis=-2)
    denominator = np.sqrt(np.sum(x * x, axis=-2) * np.sum(y * y, axis=-2))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def heldout_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of scores (n × t) for the boolean labels `positive`: the Mann–Whitney U / (n₁·n₀)."""
    positive = np.asarray(positive, dtype=bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return np.full(scores.shape[1], np.nan)
    u = scipy.stats.mannwhitneyu(scores[positive], scores[~positive], axis=0, method="asymptotic",
                                 use_continuity=False).statistic
    return np.asarray(u, dtype=float) / (n1 * n0)


def heldout_r2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Held-out R² of each column (1 − SSE/SST around the held-out mean)."""
    return np.asarray(r2_score(truth, predicted, multioutput="raw_values"), dtype=float)


def ridge_predictions(
    genes_train: np.ndarray, genes_heldout: np.ndarray, targets: np.ndarray, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of each target column on the gene PCs, its penalty chosen per target by RidgeCV's
    efficient leave-one-out; returns held-out predictions (n_heldout × t), the chosen alphas (t,) and the
    coefficients (t × p). A ±1-coded binary target gives RidgeClassifierCV's decision function."""
    model = RidgeCV(alphas=np.asarray(alphas, dtype=float), alpha_per_target=True, fit_intercept=True, gcv_mode="svd")
    with threadpool_limits(_SINGLE_THREADED):  # its cost is one SVD of the gene PCs: see _SINGLE_THREADED
        model.fit(genes_train, targets)
    alpha = np.broadcast_to(np.asarray(model.alpha_, dtype=float), (targets.shape[1],)).copy()
    coefficients = np.atleast_2d(model.coef_)
    return model.predict(genes_heldout).reshape(len(genes_heldout), -1), alpha, coefficients


class FreedmanLaneBrain:
    """What a permutation of the training brain rows needs to refit residualization, scaling and PCA.

    ``basis`` is U (n × r, orthonormal, spans the training design), ``residuals`` E = R·Y (n × q),
    ``pinv_factor`` maps Uᵀ·P·E to Δβ (design × r) with ``β* − β̂ = pinv_factor @ (Uᵀ·P·E)``, and
    ``heldout_residuals`` are held-out Y − D_h·β̂.
    """

    def __init__(
        self,
        basis: np.ndarray,
        residuals: np.ndarray,
        pinv_factor: np.ndarray,
        design_heldout: np.ndarray,
        heldout_residuals: np.ndarray,
        n_components: int,
    ):
        self.basis, self.residuals, self.pinv_factor = basis, residuals, pinv_factor
        self.design_heldout, self.heldout_residuals, self.n_components = design_heldout, heldout_residuals, n_components
        self.residual_gram = residuals.T @ residuals  # (P·E)ᵀ(P·E) for every P
        self.heldout_shift = design_heldout @ pinv_factor  # D_h·Δβ = heldout_shift·(Uᵀ·P·E)

    @property
    def bytes_per_permutation(self) -> int:
        """Float64 bytes one permutation of a `refit` chunk holds at once (gathered basis, PCs)."""
        n, q = self.residuals.shape
        return 8 * (n * (self.basis.shape[1] + 3 * self.n_components) + len(self.heldout_residuals) * 2 * q)

    def refit(self, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Brain PCs of training (n × c × k) and held-out (n_h × c × k) subjects, and the PCs' variances
        (c × k), refitted on each permuted training set (rows of `perms`).

        Every product over subjects is one matrix product for the whole chunk (stacks laid out n × (c·…)).
        """
        n, q = self.residuals.shape
        c, r, k = len(perms), self.basis.shape[1], self.n_components
        inverse = np.empty_like(perms)
        np.put_along_axis(inverse, perms, np.arange(n)[None, :], axis=1)
        # Uᵀ·P·E = (U[π⁻¹])ᵀ·E: gather the narrow basis, not the residuals.
        basis_moved = self.basis[inverse.T].reshape(n, c * r)
        projected = (basis_moved.T @ self.residuals).reshape(c, r, q)
        del basis_moved
        covariance = self.residual_gram[None] - np.swapaxes(projected, 1, 2) @ projected
        covariance /= n - 1
        sd = np.sqrt(np.clip(np.diagonal(covariance, axis1=1, axis2=2), 0.0, None))
        sd = np.where(sd > 0, sd, 1.0)
        correlation = covariance / (sd[:, :, None] * sd[:, None, :])
        with threadpool_limits(_SINGLE_THREADED):  # small factorizations: see _SINGLE_THREADED
            values, vectors = np.linalg.eigh(correlation)
        values, vectors = values[:, ::-1][:, :k], vectors[:, :, ::-1][:, :, :k]
        transform = vectors / sd[:, :, None]  # c × q × k: residual → PC
        flat_transform = transform.transpose(1, 0, 2).reshape(q, c * k)
        removed = (projected @ transform).transpose(1, 0, 2).reshape(r, c * k)  # (Uᵀ·P·E)·T
        # Training PCs R·P·E·T = P·(E·T) − U·((Uᵀ·P·E)·T).
        moved = (self.residuals @ flat_transform).reshape(n, c, k)
        train = moved[perms.T, np.arange(c)[None, :], :]
        del moved
        train -= (self.basis @ removed).reshape(n, c, k)
        # Held-out PCs (Y_h − D_h·β*)·T with β* = β̂ + pinv_factor·(Uᵀ·P·E).
        heldout = self.heldout_residuals @ flat_transform - self.heldout_shift @ removed
        return train, heldout.reshape(-1, c, k), values


class BatchedRidgeCCA:
    """Ridge CCA of fixed gene PCs against many brain-PC matrices, with inner-CV choice of the gene shrinkage.

    Training rows must be ordered by inner split: ``split_bounds`` are the [start, stop) of each validation
    block, so the blocks are slices (no copies of the gene PCs).
    """

    def __init__(
        self,
        genes_train: np.ndarray,
        genes_heldout: np.ndarray,
        split_bounds: list[tuple[int, int]],
        gene_shrinkages: np.ndarray,
        brain_shrinkage: float,
        n_components: int,
    ):
        self.shrinkages = np.asarray(gene_shrinkages, dtype=float)
        self.brain_shrinkage = float(brain_shrinkage)
        self.n_components = n_components
        self.bounds = split_bounds
        n = len(genes_train)
        self.n = n
        self.scale = view_scale(genes_train)
        self.genes = (genes_train - genes_train.mean(axis=0)) / self.scale
        self.gene_sums, grams = [], []
        for start, stop in split_bounds:
            block = self.genes[start:stop]
            self.gene_sums.append(block.sum(axis=0))
            grams.append(block.T @ block)
        gram = np.sum(grams, axis=0)
        # Inner training sets: eigenvectors of their gene covariance, and the validation covariance rotated into
        # them; the gene whitening of any shrinkage is then a diagonal scaling.
        self.inner = []
        for (start, stop), sums, validation_gram in zip(split_bounds, self.gene_sums, grams):
            n_val, n_fit = stop - start, n - (stop - start)
            fit_sums = -sums  # the training columns are centred: the inner-training sums are minus the validation's
            covariance = (gram - validation_gram - np.outer(fit_sums, fit_sums) / n_fit) / (n_fit - 1)
            with threadpool_limits(_SINGLE_THREADED):  # see _SINGLE_THREADED
                values, vectors = np.linalg.eigh(covariance)
            kept = values > values.max() * len(values) * np.finfo(float).eps
            values, vectors = values[kept], vectors[:, kept]
            validation_cov = (validation_gram - np.outer(sums, sums) / n_val) / (n_val - 1)
            self.inner.append((values, vectors, vectors.T @ validation_cov @ vectors))
        with threadpool_limits(_SINGLE_THREADED):
            values, vectors = np.linalg.eigh(gram / (n - 1))
        kept = values > values.max() * len(values) * np.finfo(float).eps
        self.values, self.vectors = values[kept], vectors[:, kept]
        heldout = (genes_heldout - genes_heldout.mean(axis=0)) / self.scale
        self.heldout_rotated = heldout @ self.vectors

    def heldout_correlations(
        self, brain_train: np.ndarray, brain_heldout: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Held-out canonical correlations (c × m), chosen gene shrinkage (c,) and inner-CV scores (c × grid) for
        c brain-PC matrices: training n × c × k and held-out n_h × c × k."""
        n, c, k = brain_train.shape
        m = min(self.n_components, k)
        scale = np.sqrt(np.mean(np.var(brain_train, axis=0, ddof=1), axis=1))  # c
        scale = np.where(scale > 0, scale, 1.0)
        brain = brain_train / scale[None, :, None]
        flat = brain.reshape(n, c * k)
        cross_parts, sum_parts, gram_parts = [], [], []
        for start, stop in self.bounds:
            cross_parts.append((self.genes[start:stop].T @ flat[start:stop]).reshape(-1, c, k))
            sum_parts.append(brain[start:stop].sum(axis=0))
            block = np.ascontiguousarray(brain[start:stop].transpose(1, 0, 2))  # c × n_val × k
            gram_parts.append(np.swapaxes(block, 1, 2) @ block)
        cross, sums, gram = np.sum(cross_parts, axis=0), np.sum(sum_parts, axis=0), np.sum(gram_parts, axis=0)

        scores = np.zeros((c, len(self.shrinkages)))
        with threadpool_limits(_SINGLE_THREADED):  # small factorizations and products, up to the final fit
            for (start, stop), gene_sums, cross_val, sums_val, gram_val, (values, vectors, validation_cov) in zip(
                self.bounds, self.gene_sums, cross_parts, sum_parts, gram_parts, self.inner
            ):
                n_val, n_fit = stop - start, n - (stop - start)
                sums_fit = sums - sums_val
                cross_fit = (cross - cross_val) + np.einsum("p,ck->pck", gene_sums, sums_fit) / n_fit
                rotated_fit = _rotate(vectors, cross_fit) / (n_fit - 1)
                cross_val_centred = cross_val - np.einsum("p,ck->pck", gene_sums, sums_val) / n_val
                rotated_val = _rotate(vectors, cross_val_centred) / (n_val - 1)
                brain_fit = (gram - gram_val - np.einsum("ck,cl->ckl", sums_fit, sums_fit) / n_fit) / (n_fit - 1)
                brain_val = (gram_val - np.einsum("ck,cl->ckl", sums_val, sums_val) / n_val) / (n_val - 1)
                brain_vectors, brain_weights = whitening(brain_fit, self.brain_shrinkage)
                brain_whitening = brain_vectors * brain_weights[:, None, :]
                for index, shrinkage in enumerate(self.shrinkages):
                    gene_weights = _gene_weights(values, shrinkage)
                    gene_dirs, brain_dirs = _top_pairs(gene_weights, rotated_fit, brain_whitening, m)
                    covariance = np.einsum("crm,crk,ckm->cm", gene_dirs, rotated_val, brain_dirs, optimize=True)
                    gene_var = np.einsum("crm,rs,csm->cm", gene_dirs, validation_cov, gene_dirs, optimize=True)
                    brain_var = np.einsum("ckm,ckl,clm->cm", brain_dirs, brain_val, brain_dirs, optimize=True)
                    denominator = np.sqrt(np.clip(gene_var * brain_var, 0.0, None))
                    correlation = np.divide(covariance, denominator, out=np.zeros_like(covariance),
                                            where=denominator > 1e-300)
                    scores[:, index] += correlation.mean(axis=1) / len(self.bounds)

            chosen = self.shrinkages[np.argmax(scores, axis=1)]  # first best, as GridSearchCV
            full_cross = (cross - np.einsum("p,ck->pck", np.sum(self.gene_sums, axis=0), sums) / n) / (n - 1)
            rotated = _rotate(self.vectors, full_cross)
            brain_cov = (gram - np.einsum("ck,cl->ckl", sums, sums) / n) / (n - 1)
            brain_vectors, brain_weights = whitening(brain_cov, self.brain_shrinkage)
            gene_weights = _gene_weights(self.values, chosen[:, None])
            gene_dirs, brain_dirs = _top_pairs(gene_weights, rotated, brain_vectors * brain_weights[:, None, :], m)
        gene_variates = np.einsum("nr,crm->cnm", self.heldout_rotated, gene_dirs, optimize=True)
        brain_variates = np.einsum("nck,ckm->cnm", brain_heldout / scale[None, :, None], brain_dirs, optimize=True)
        return pearson_columns(gene_variates, brain_variates), chosen, scores


def _rotate(vectors: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """vectorsᵀ·cross for every stacked matrix: p × r and p × c × k → c × r × k, as one matrix product."""
    p, c, k = cross.shape
    return (vectors.T @ cross.reshape(p, c * k)).reshape(-1, c, k).transpose(1, 0, 2)


def _gene_weights(values: np.ndarray, shrinkage: float | np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt((1.0 - shrinkage) * values + shrinkage)


def _top_pairs(
    gene_weights: np.ndarray, rotated_cross: np.ndarray, brain_whitening: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top m canonical directions: gene ones in the rotated gene basis (c × r × m, whitening applied) and
    brain ones on the brain PCs (c × k × m), from the SVD of the whitened cross-covariance."""
    whitened = (gene_weights[..., :, None] * rotated_cross) @ brain_whitening
    left, _, right_t = np.linalg.svd(whitened, full_matrices=False)
    gene_dirs = gene_weights[..., :, None] * left[..., :m]
    brain_dirs = brain_whitening @ np.swapaxes(right_t[..., :m, :], -1, -2)
    return gene_dirs, brain_dirs
