"""Gene–brain alignment and prediction per cross-validation fold, fitted on the training subjects only.

Per fold, from the gene PCs of training and held-out subjects (``subject_embeddings_pca``), the covariate
designs, the brain features and the exchangeability blocks of the training subjects:

1. brain features residualized on the covariates (OLS on the training design, applied to held-out subjects),
   standardized, and reduced by PCA (the residuals' correlation matrix) fitted on training subjects;
2. ridge CCA (cca-zoo ``RidgeCCA``) between gene PCs and brain PCs, its gene-view shrinkage chosen by inner
   K-fold CV on the training fold (cca-zoo ``GridSearchCV``); held-out subjects are projected with the training
   weights and each component's held-out canonical correlation is reported;
3. prediction of the label (and optionally each brain PC) from the gene PCs with ridge regression, the penalty
   chosen by leave-one-out CV (scikit-learn ``RidgeCV``; for a binary label this is ``RidgeClassifierCV``);
   held-out AUC (binary) or R² (continuous); an AUC whose held-out subjects hold one class is undefined (NaN,
   without a p-value), and its row says why (``undefined_reason``);
4. permutation tests: training subjects permuted within exchangeability blocks, everything fitted on brain data
   or the label refitted per permutation (Freedman–Lane for the residualization; see ``alignment_engine``),
   held-out subjects never permuted. P-values for each component (plain, and family-wise by the max statistic
   over components) and for the prediction metrics.

The gene PCs are computed from gene data alone, so a permutation of the brain rows leaves them, and everything
fitted from them alone, unchanged: they are not refitted. A held-out subject reaches no fitted quantity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from cca_zoo.linear import RidgeCCA
from cca_zoo.metrics import factor_loadings
from cca_zoo.model_selection import GridSearchCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from kb_assets.stats.alignment_engine import (
    BatchedRidgeCCA,
    FreedmanLaneBrain,
    heldout_auc,
    heldout_r2,
    pearson_columns,
    ridge_predictions,
    view_scale,
)
from kb_assets.stats.permutation import block_permutations, max_statistic_p_values, permutation_p_values

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (permutations done, permutations in all)


@dataclass(frozen=True)
class AlignmentSettings:
    """What is fitted and how it is tested; shrinkages are cca-zoo's (0 = CCA, 1 = PLS) on views scaled to unit
    mean variance, alphas scikit-learn's ridge penalties on gene PCs scaled the same way."""

    n_brain_components: int = 10
    n_canonical_components: int = 3
    gene_shrinkages: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    brain_shrinkage: float = 0.0
    inner_splits: int = 5
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))
    n_permutations: int = 1000
    seed: int = 0
    predict_brain_pcs: bool = False
    label_kind: Literal["auto", "binary", "continuous"] = "auto"  # auto: `label_kind` of each fold's labels
    memory_bytes: int = 512 << 20  # working memory of one chunk of permutations

    def __post_init__(self):
        if self.n_brain_components < 1 or self.n_canonical_components < 1:
            raise ValueError("n_brain_components and n_canonical_components must be at least 1")
        if not self.gene_shrinkages or not all(0.0 <= c <= 1.0 for c in (*self.gene_shrinkages, self.brain_shrinkage)):
            raise ValueError("shrinkages must lie in [0, 1] and gene_shrinkages must list at least one")
        if self.inner_splits < 2:
            raise ValueError(f"inner_splits must be at least 2, got {self.inner_splits}")
        if self.n_permutations < 0:
            raise ValueError(f"n_permutations must be at least 0, got {self.n_permutations}")


@dataclass(frozen=True)
class FoldData:
    """One fold's inputs, training rows and held-out rows in matching orders.

    ``design_*`` are the covariate designs (with an intercept column) already coded by the gene side's coder;
    ``blocks`` one exchangeability block code per training subject (``exchangeability_blocks(site, batch)``);
    ``label_*`` the label (two classes, or a number) or None.
    """

    fold: int
    train_ids: np.ndarray
    heldout_ids: np.ndarray
    genes_train: np.ndarray
    genes_heldout: np.ndarray
    design_train: np.ndarray
    design_heldout: np.ndarray
    brain_train: np.ndarray
    brain_heldout: np.ndarray
    blocks: np.ndarray
    label_train: np.ndarray | None = None
    label_heldout: np.ndarray | None = None
    brain_features: list[str] | None = None

    def __post_init__(self):
        n, n_h = len(self.train_ids), len(self.heldout_ids)
        shapes = {
            "genes_train": (self.genes_train, n), "genes_heldout": (self.genes_heldout, n_h),
            "design_train": (self.design_train, n), "design_heldout": (self.design_heldout, n_h),
            "brain_train": (self.brain_train, n), "brain_heldout": (self.brain_heldout, n_h),
        }
        for name, (array, rows) in shapes.items():
            array = np.asarray(array)
            if array.ndim != 2 or len(array) != rows:
                raise ValueError(f"{name} is {array.shape}; expected {rows} rows (one per subject) and 2 dimensions")
            if not np.isfinite(array).all():
                raise ValueError(f"{name} holds a non-finite value")
        for a, b in (("genes", "genes"), ("design", "design"), ("brain", "brain")):
            if np.shape(getattr(self, f"{a}_train"))[1] != np.shape(getattr(self, f"{b}_heldout"))[1]:
                raise ValueError(f"{a}_train and {a}_heldout have different numbers of columns")
        if len(np.asarray(self.blocks)) != n:
            raise ValueError(f"blocks has {len(np.asarray(self.blocks))} entries; expected one per training subject")
        if (self.label_train is None) != (self.label_heldout is None):
            raise ValueError("give the label of both training and held-out subjects, or of neither")
        if self.label_train is not None:
            labels_by_split = (("label_train", self.label_train, n), ("label_heldout", self.label_heldout, n_h))
            for name, labels, rows in labels_by_split:
                if len(np.asarray(labels)) != rows or pd.isna(np.asarray(labels, dtype=object)).any():
                    raise ValueError(f"{name} must hold one non-missing label per subject ({rows})")
        if self.brain_features is not None and len(self.brain_features) != np.shape(self.brain_train)[1]:
            raise ValueError("brain_features must name every brain column")


@dataclass(frozen=True)
class BrainReduction:
    """Brain features → OLS residuals on the design → standardized → PCA, fitted on training subjects."""

    coefficients: np.ndarray  # design × features
    scales: np.ndarray  # training SD of each residual feature
    components: np.ndarray  # features × k (eigenvectors of the residuals' correlation matrix)
    explained_variance: np.ndarray  # k eigenvalues; their sum over all features is the number of features

    def residuals(self, brain: np.ndarray, design: np.ndarray) -> np.ndarray:
        """Standardized residual features (subjects × features)."""
        return (np.asarray(brain, dtype=float) - np.asarray(design, dtype=float) @ self.coefficients) / self.scales

    def transform(self, brain: np.ndarray, design: np.ndarray) -> np.ndarray:
        """Brain PCs (subjects × k)."""
        return self.residuals(brain, design) @ self.components


@dataclass(frozen=True)
class FoldAlignment:
    """One fold's results. ``null`` holds the permutation distributions (rows = permutations)."""

    fold: int
    canonical: pd.DataFrame  # component, train_r, heldout_r, p_value, p_fwe, gene_shrinkage, n_permutations
    prediction: pd.DataFrame  # target, metric, value, p_value, alpha, n_permutations, undefined_reason
    loadings: pd.DataFrame  # component, view, feature, weight, structure_correlation
    heldout: pd.DataFrame  # subject_id, gene_cv_j, brain_cv_j, label_prediction
    null: dict[str, np.ndarray]
    brain_reduction: BrainReduction
    gene_weights: np.ndarray  # gene PCs × components (on the gene PCs as given)
    brain_weights: np.ndarray  # brain PCs × components
    gene_shrinkage: float
    label_coefficients: np.ndarray | None = None
    label_alpha: float | None = None
    settings: AlignmentSettings = field(default_factory=AlignmentSettings)

    @property
    def heldout_r(self) -> np.ndarray:
        return self.canonical["heldout_r"].to_numpy()


def align_fold(data: FoldData, settings: AlignmentSettings = AlignmentSettings(),
               progress: Progress | None = None) -> FoldAlignment:
    """Fit and test the gene–brain alignment and the prediction on one fold (see the module docstring)."""
    fold = _Prepared(data, settings)
    brain_train = fold.reduction.transform(fold.brain, fold.design)
    brain_heldout = fold.reduction.transform(data.brain_heldout, data.design_heldout)
    k = brain_train.shape[1]
    m = min(settings.n_canonical_components, k, fold.genes.shape[1])

    # Observed alignment: cca-zoo's grid search over the gene shrinkage on the inner splits, refitted on all.
    gene_scale, brain_scale = view_scale(fold.genes), view_scale(brain_train)
    # Each cca-zoo fit eigendecomposes the gene covariance; threaded OpenBLAS runs that several times slower
    # when another process holds a core (the whole search: 150 s vs 29 s on one thread at 16,000 × 512 on 2
    # shared cores), as for the factorizations in alignment_engine.
    with threadpool_limits(1):
        search = GridSearchCV(
            RidgeCCA(n_components=m, shrinkage=[0.0, settings.brain_shrinkage]),
            param_grid={"shrinkage__0": list(settings.gene_shrinkages)},
            cv=fold.inner_splits,
        ).fit([fold.genes / gene_scale, brain_train / brain_scale])
    model = search.best_estimator_
    gene_shrinkage = float(search.best_params_["shrinkage__0"])
    train_variates = model.transform([fold.genes / gene_scale, brain_train / brain_scale])
    heldout_variates = model.transform([fold.genes_heldout / gene_scale, brain_heldout / brain_scale])
    train_r = pearson_columns(*train_variates)
    heldout_r = pearson_columns(*heldout_variates)
    gene_weights, brain_weights = model.weights_[0] / gene_scale, model.weights_[1] / brain_scale

    # Observed prediction.
    label = _Label.of(data, settings) if data.label_train is not None else None
    predictions: dict[str, tuple[float, float]] = {}
    label_prediction = label_coefficients = label_alpha = None
    if label is not None:
        predicted, alpha, coefficients = ridge_predictions(
            fold.genes / gene_scale, fold.genes_heldout / gene_scale, label.train[fold.order][:, None],
            settings.ridge_alphas)
        label_prediction = predicted[:, 0]
        label_coefficients, label_alpha = coefficients[0] / gene_scale, float(alpha[0])
        predictions["label"] = (float(label.metric(predicted)[0]), label_alpha)
    if settings.predict_brain_pcs:
        predicted, alpha, _ = ridge_predictions(fold.genes / gene_scale, fold.genes_heldout / gene_scale,
                                                brain_train, settings.ridge_alphas)
        for j, (value, a) in enumerate(zip(heldout_r2(brain_heldout, predicted), alpha), start=1):
            predictions[f"brain_pc_{j}"] = (float(value), float(a))

    null = _null_distributions(fold, settings, m, label, progress) if settings.n_permutations else {}

    canonical = pd.DataFrame({
        "fold": data.fold,
        "component": np.arange(1, m + 1),
        "train_r": train_r,
        "heldout_r": heldout_r,
        "p_value": permutation_p_values(heldout_r, null["heldout_r"]) if null else np.nan,
        "p_fwe": max_statistic_p_values(heldout_r, null["heldout_r"]) if null else np.nan,
        "gene_shrinkage": gene_shrinkage,
        "n_permutations": settings.n_permutations,
    })
    rows = []
    for target, (value, alpha) in predictions.items():
        statistic = "label" if target == "label" else "brain_pc_r2"
        column = None if target == "label" else int(target.rsplit("_", 1)[1]) - 1
        values = null.get(statistic)
        p_value = np.nan
        # An undefined (NaN) metric has no p-value: every comparison with NaN is false, which would count it as
        # beating every permutation.
        if values is not None and np.isfinite(value):
            p_value = float(permutation_p_values(value, values if column is None else values[:, column])[0])
        metric = label.metric_name if target == "label" else "r2"
        rows.append({"fold": data.fold, "target": target, "metric": metric, "value": value, "p_value": p_value,
                     "alpha": alpha, "n_permutations": settings.n_permutations,
                     "undefined_reason": label.undefined_reason if target == "label" else ""})
    prediction = pd.DataFrame(rows, columns=["fold", "target", "metric", "value", "p_value", "alpha",
                                             "n_permutations", "undefined_reason"])

    heldout = pd.DataFrame({"fold": data.fold, "subject_id": np.asarray(data.heldout_ids).astype(str)})
    for j in range(m):
        heldout[f"gene_cv_{j + 1}"] = heldout_variates[0][:, j]
        heldout[f"brain_cv_{j + 1}"] = heldout_variates[1][:, j]
    if label_prediction is not None:
        heldout["label_prediction"] = label_prediction

    return FoldAlignment(
        fold=data.fold,
        canonical=canonical,
        prediction=prediction,
        loadings=_loadings(data, fold, brain_train, train_variates, gene_weights, brain_weights),
        heldout=heldout,
        null=null,
        brain_reduction=fold.reduction,
        gene_weights=gene_weights,
        brain_weights=brain_weights,
        gene_shrinkage=gene_shrinkage,
        label_coefficients=label_coefficients,
        label_alpha=label_alpha,
        settings=settings,
    )


def permutation_null(data: FoldData, settings: AlignmentSettings, perms: np.ndarray) -> dict[str, np.ndarray]:
    """The null statistics for explicit permutations of the training subjects (rows of `perms`, in the order of
    ``data.train_ids``): what `align_fold` computes for its random draws; for checks against a plain refit."""
    fold = _Prepared(data, settings)
    k = fold.reduction.components.shape[1]
    m = min(settings.n_canonical_components, k, fold.genes.shape[1])
    label = _Label.of(data, settings) if data.label_train is not None else None
    # A permutation of the original rows, seen in the reordered rows: position i holds original row order[i].
    moved = fold.position[np.asarray(perms)[:, fold.order]]
    return _null_distributions(fold, settings, m, label, None, explicit=moved)


def attribute_genes(
    data: FoldData,
    genes: Sequence[str],
    gene_pcs_without: Callable[[str], tuple[np.ndarray, np.ndarray]],
    full: FoldAlignment,
    n_permutations: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Leave-one-gene-out: for each gene, refit the fold on gene PCs made without it and report the change.

    `gene_pcs_without(gene)` returns the fold's gene PCs (training, held-out) refitted without that gene; `full`
    is `align_fold`'s result on all genes (its settings are reused). With `n_permutations` > 0 the reduced fit is
    tested like the full one, and the drop Δ = full − reduced is compared with its permutation null: Δ computed
    on the same permuted data for both fits (the first `n_permutations` draws of the full fit's seed), i.e. with
    genes and brain unrelated.
    """
    settings = replace(full.settings, n_permutations=n_permutations)
    if n_permutations > full.settings.n_permutations:
        raise ValueError(f"n_permutations ({n_permutations}) exceeds the full fit's "
                         f"({full.settings.n_permutations}): its null has no draws to pair with")
    full_label = full.prediction.set_index("target")["value"].get("label", np.nan)
    rows = []
    for done, gene in enumerate(genes):
        genes_train, genes_heldout = gene_pcs_without(gene)
        reduced = align_fold(replace(data, genes_train=genes_train, genes_heldout=genes_heldout), settings)
        label_value = reduced.prediction.set_index("target")["value"].get("label", np.nan)
        row = {
            "fold": data.fold,
            "gene": gene,
            "heldout_r1": float(full.heldout_r[0]),
            "heldout_r1_without": float(reduced.heldout_r[0]),
            "delta_r1": float(full.heldout_r[0] - reduced.heldout_r[0]),
            "label_metric": float(full_label),
            "label_metric_without": float(label_value),
            "delta_label_metric": float(full_label - label_value),
            "p_value_without": np.nan,
            "p_delta_r1": np.nan,
            "label_p_value_without": np.nan,
            "p_delta_label_metric": np.nan,
            "n_permutations": n_permutations,
        }
        if n_permutations:
            row["p_value_without"] = float(reduced.canonical["p_value"].iloc[0])
            delta_null = full.null["heldout_r"][:n_permutations, 0] - reduced.null["heldout_r"][:, 0]
            row["p_delta_r1"] = float(permutation_p_values(row["delta_r1"], delta_null)[0])
            if "label" in reduced.null:
                row["label_p_value_without"] = float(
                    reduced.prediction.set_index("target")["p_value"]["label"])
                delta_label = full.null["label"][:n_permutations] - reduced.null["label"]
                if np.isfinite(row["delta_label_metric"]):  # an undefined metric has no p-value (see align_fold)
                    row["p_delta_label_metric"] = float(
                        permutation_p_values(row["delta_label_metric"], delta_label)[0])
        rows.append(row)
        if progress is not None:
            progress(done + 1, len(genes))
    return pd.DataFrame(rows)


def alignment_tables(results: Sequence[FoldAlignment]) -> dict[str, pd.DataFrame]:
    """The tables an asset writes: canonical correlations, prediction, null distributions (long: fold,
    statistic, component, permutation, value), canonical loadings and held-out subjects' scores."""
    nulls = []
    for result in results:
        for statistic, values in result.null.items():
            values = np.asarray(values).reshape(len(values), -1)
            permutation, component = np.indices(values.shape)
            nulls.append(pd.DataFrame({
                "fold": result.fold,
                "statistic": statistic,
                "component": component.ravel() + 1,
                "permutation": permutation.ravel() + 1,
                "value": values.ravel().astype(float),
            }))
    null_columns = ["fold", "statistic", "component", "permutation", "value"]
    return {
        "canonical_correlations": pd.concat([r.canonical for r in results], ignore_index=True),
        "prediction": pd.concat([r.prediction for r in results], ignore_index=True),
        "null_distributions": pd.concat(nulls, ignore_index=True) if nulls else pd.DataFrame(columns=null_columns),
        "canonical_loadings": pd.concat([r.loadings for r in results], ignore_index=True),
        "heldout_scores": pd.concat([r.heldout for r in results], ignore_index=True),
    }


def summarize_encoders(tables: Mapping[str, Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """One row per encoder and fold with the held-out first canonical correlation and the label metric, for
    comparing encoders on the same gene set, cohort and folds. `tables`: per encoder, its `alignment_tables`
    (canonical_correlations and prediction, as the gene_brain_alignment assets write them)."""
    frames = []
    for encoder, written in tables.items():
        first = written["canonical_correlations"].query("component == 1")
        frame = pd.DataFrame({"encoder": encoder, "fold": first["fold"].to_numpy(),
                              "heldout_r1": first["heldout_r"].to_numpy(float),
                              "p_value_r1": first["p_value"].to_numpy(float)})
        label = written["prediction"].query("target == 'label'").set_index("fold")
        frame["label_metric"] = frame["fold"].map(label["value"]).astype(float)
        frame["label_metric_name"] = frame["fold"].map(label["metric"])
        frame["label_p_value"] = frame["fold"].map(label["p_value"]).astype(float)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


class _Prepared:
    """A fold's training rows reordered so that each inner validation split is a contiguous block, and the
    brain reduction fitted on them."""

    def __init__(self, data: FoldData, settings: AlignmentSettings):
        n = len(data.train_ids)
        if n < 2 * settings.inner_splits:
            raise ValueError(f"{n} training subjects are too few for {settings.inner_splits} inner splits")
        split_of = np.empty(n, dtype=np.int64)
        splitter = KFold(settings.inner_splits, shuffle=True, random_state=settings.seed)
        for number, (_, validation) in enumerate(splitter.split(np.zeros(n))):
            split_of[validation] = number
        self.order = np.argsort(split_of, kind="stable")
        self.position = np.empty(n, dtype=np.int64)
        self.position[self.order] = np.arange(n)
        edges = np.concatenate([[0], np.cumsum(np.bincount(split_of, minlength=settings.inner_splits))])
        self.bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        everyone = np.arange(n)
        self.inner_splits = [(np.setdiff1d(everyone, np.arange(a, b)), np.arange(a, b)) for a, b in self.bounds]
        self.genes = np.asarray(data.genes_train, dtype=np.float64)[self.order]
        self.genes_heldout = np.asarray(data.genes_heldout, dtype=np.float64)
        self.design = np.asarray(data.design_train, dtype=np.float64)[self.order]
        self.design_heldout = np.asarray(data.design_heldout, dtype=np.float64)
        self.brain = np.asarray(data.brain_train, dtype=np.float64)[self.order]
        self.brain_heldout = np.asarray(data.brain_heldout, dtype=np.float64)
        self.blocks = np.asarray(data.blocks)[self.order]
        self.reduction, self.freedman_lane = _fit_brain(self.brain, self.design, settings.n_brain_components,
                                                        self.design_heldout, self.brain_heldout)
        self.data = data


def _fit_brain(brain: np.ndarray, design: np.ndarray, n_components: int, design_heldout: np.ndarray,
               brain_heldout: np.ndarray) -> tuple[BrainReduction, FreedmanLaneBrain]:
    n, q = brain.shape
    u, s, vt = np.linalg.svd(design, full_matrices=False)
    kept = s > s[0] * max(design.shape) * np.finfo(float).eps
    basis, pinv_factor = u[:, kept], vt[kept].T / s[kept]
    if not np.allclose(basis @ (basis.T @ np.ones(n)), 1.0, atol=1e-8):
        raise ValueError("the design needs an intercept column (the fold's coded covariates with a column of ones)")
    k = min(n_components, q, n - basis.shape[1])
    if k < n_components:
        log.warning("brain components reduced from %d to %d (%d features, %d training subjects)",
                    n_components, k, q, n)
    coefficients = pinv_factor @ (basis.T @ brain)
    residuals = brain - design @ coefficients
    scales = residuals.std(axis=0, ddof=1)
    scales = np.where(scales > 0, scales, 1.0)
    standardized = residuals / scales
    values, vectors = np.linalg.eigh(standardized.T @ standardized / (n - 1))
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    # A component's sign is arbitrary; fix it so its largest loading is positive, run to run.
    vectors = vectors * np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(k)])
    reduction = BrainReduction(coefficients=coefficients, scales=scales, components=vectors, explained_variance=values)
    heldout_residuals = brain_heldout - design_heldout @ coefficients
    return reduction, FreedmanLaneBrain(basis, residuals, pinv_factor, design_heldout, heldout_residuals, k)


@dataclass(frozen=True)
class _Label:
    """The label as a regression target: ±1 for two classes (the second sorted class is +1), else a number."""

    train: np.ndarray
    heldout: np.ndarray
    binary: bool
    positive_heldout: np.ndarray | None
    undefined_reason: str = ""  # why the held-out metric is undefined (NaN); empty when it is defined

    @property
    def metric_name(self) -> str:
        return "auc" if self.binary else "r2"

    def metric(self, predicted: np.ndarray) -> np.ndarray:
        if self.binary:
            return heldout_auc(predicted, self.positive_heldout)
        return heldout_r2(np.broadcast_to(self.heldout[:, None], predicted.shape), predicted)

    @classmethod
    def of(cls, data: FoldData, settings: AlignmentSettings) -> _Label:
        train, heldout = np.asarray(data.label_train), np.asarray(data.label_heldout)
        values = np.concatenate([train, heldout])
        kind = label_kind(values) if settings.label_kind == "auto" else settings.label_kind
        classes = np.unique(values.astype(str))
        if kind == "binary" and len(classes) == 2:
            positive = classes[1]
            heldout_classes = np.unique(heldout.astype(str))
            one_class = (f"the fold's {len(heldout)} held-out subjects with brain data all have label "
                         f"'{heldout_classes[0]}', so the AUC, which compares the two classes, is undefined"
                         if len(heldout_classes) == 1 else "")
            return cls(np.where(train.astype(str) == positive, 1.0, -1.0),
                       np.where(heldout.astype(str) == positive, 1.0, -1.0), True, heldout.astype(str) == positive,
                       one_class)
        if kind == "continuous" and _numeric(values):
            return cls(train.astype(float), heldout.astype(float), False, None)
        raise ValueError(f"fold {data.fold}: label_kind {settings.label_kind!r} does not fit the label's values "
                         f"{list(classes[:5])} (binary: two classes; continuous: numbers)")


def label_kind(labels: np.ndarray) -> Literal["binary", "continuous"] | None:
    """How a label is predicted: binary (AUC) for two distinct values, continuous (R²) for more values that are
    all numbers; None for any other label."""
    labels = np.asarray(labels)
    n_values = len(np.unique(labels.astype(str)))
    if n_values == 2:
        return "binary"
    return "continuous" if n_values > 2 and _numeric(labels) else None


def _numeric(labels: np.ndarray) -> bool:
    try:
        return bool(np.isfinite(np.asarray(labels).astype(float)).all())
    except ValueError:
        return False


def _null_distributions(
    fold: _Prepared, settings: AlignmentSettings, m: int, label: _Label | None, progress: Progress | None,
    explicit: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Null statistics for the permutations (random draws within blocks, or `explicit` ones, in reordered rows)."""
    total = settings.n_permutations if explicit is None else len(explicit)
    engine = BatchedRidgeCCA(fold.genes, fold.genes_heldout, fold.bounds, np.asarray(settings.gene_shrinkages),
                             settings.brain_shrinkage, m)
    genes, genes_heldout = fold.genes / engine.scale, fold.genes_heldout / engine.scale
    per_permutation = fold.freedman_lane.bytes_per_permutation
    chunk = int(max(1, min(256, settings.memory_bytes // per_permutation)))

    def draws(size: int):
        if explicit is not None:
            for start in range(0, total, size):
                yield explicit[start:start + size]
        else:
            yield from block_permutations(fold.blocks, total, settings.seed, size)

    heldout_r = np.empty((total, m))
    chosen = np.empty(total)
    brain_r2 = []
    done = 0
    for perms in draws(chunk):
        train_pcs, heldout_pcs, _ = fold.freedman_lane.refit(perms)
        heldout_r[done:done + len(perms)], chosen[done:done + len(perms)], _ = engine.heldout_correlations(
            train_pcs, heldout_pcs)
        if settings.predict_brain_pcs:
            n, c, k = train_pcs.shape
            predicted, _, _ = ridge_predictions(genes, genes_heldout, train_pcs.reshape(n, c * k),
                                                settings.ridge_alphas)
            truth = heldout_pcs.reshape(len(heldout_pcs), c * k)
            brain_r2.append(heldout_r2(truth, predicted).reshape(c, k))
        done += len(perms)
        if progress is not None:
            progress(done, total)
    null = {"heldout_r": heldout_r, "gene_shrinkage": chosen}
    if brain_r2:
        null["brain_pc_r2"] = np.vstack(brain_r2)
    if label is not None:
        # The label model refits only a ridge per permutation: larger chunks, the same draws (same seed).
        label_chunk = int(max(1, settings.memory_bytes // (8 * 6 * len(fold.genes))))
        metrics = []
        for perms in draws(label_chunk):
            targets = label.train[fold.order][perms].T
            predicted, _, _ = ridge_predictions(genes, genes_heldout, targets, settings.ridge_alphas)
            metrics.append(label.metric(predicted))
        null["label"] = np.concatenate(metrics)
    return null


def _loadings(data: FoldData, fold: _Prepared, brain_train: np.ndarray, train_variates: list[np.ndarray],
              gene_weights: np.ndarray, brain_weights: np.ndarray) -> pd.DataFrame:
    """Weights and structure correlations (cca-zoo ``factor_loadings``) of each canonical variate on the gene
    PCs, the brain PCs and the (residualized, standardized) brain features, on training subjects."""
    residuals = fold.reduction.residuals(fold.brain, fold.design)
    gene_structure, brain_structure = factor_loadings([fold.genes, brain_train], train_variates)
    (feature_structure,) = factor_loadings([residuals], [train_variates[1]])
    feature_names = data.brain_features or [f"brain_feature_{i + 1}" for i in range(residuals.shape[1])]
    blocks = [
        ("gene_pc", [f"gene_pc_{i + 1}" for i in range(len(gene_weights))], gene_weights, gene_structure),
        ("brain_pc", [f"brain_pc_{i + 1}" for i in range(len(brain_weights))], brain_weights, brain_structure),
        ("brain_feature", feature_names, fold.reduction.components @ brain_weights, feature_structure),
    ]
    frames = []
    for view, names, weights, structure in blocks:
        component, feature = np.meshgrid(np.arange(weights.shape[1]), np.arange(len(names)))
        frames.append(pd.DataFrame({
            "fold": data.fold,
            "component": component.ravel() + 1,
            "view": view,
            "feature": np.asarray(names, dtype=object)[feature.ravel()],
            "weight": weights.ravel(),
            "structure_correlation": structure.ravel(),
        }))
    return pd.concat(frames, ignore_index=True)
