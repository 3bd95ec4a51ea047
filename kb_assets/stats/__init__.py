"""Statistics domain code: covariates, cross-validation folds, the factored subject matrix, residualized PCA."""

from kb_assets.stats.covariates import (
    CovariateCoder,
    CovariateTable,
    covariate_coder,
    intersect_subjects,
    load_covariates,
)
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.plots import pc_scatter_png, scree_plot_png
from kb_assets.stats.projection import FOLD_SCORES_SCHEMA, ORDERS, SCALES, FoldFit, ResidualizedPCA, fit_folds
from kb_assets.stats.subject_matrix import (
    DenseSubjectMatrix,
    FactoredSubjectMatrix,
    GeneBlock,
    as_subject_matrix,
)

__all__ = [
    "FOLD_SCORES_SCHEMA",
    "ORDERS",
    "SCALES",
    "CovariateCoder",
    "CovariateTable",
    "DenseSubjectMatrix",
    "FactoredSubjectMatrix",
    "FoldFit",
    "GeneBlock",
    "ResidualizedPCA",
    "as_subject_matrix",
    "assign_folds",
    "covariate_coder",
    "fit_folds",
    "intersect_subjects",
    "load_covariates",
    "pc_scatter_png",
    "scree_plot_png",
]

