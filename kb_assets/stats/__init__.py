"""Statistics domain code: covariates, cross-validation folds, residualized PCA and its figures."""

from kb_assets.stats.covariates import CovariateTable, design_matrix, intersect_subjects, load_covariates
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.plots import pc_scatter_png, scree_plot_png
from kb_assets.stats.projection import ORDERS, FoldResult, Projector, fit_fold_projections, fit_projector

__all__ = [
    "ORDERS",
    "CovariateTable",
    "FoldResult",
    "Projector",
    "assign_folds",
    "design_matrix",
    "fit_fold_projections",
    "fit_projector",
    "intersect_subjects",
    "load_covariates",
    "pc_scatter_png",
    "scree_plot_png",
]
