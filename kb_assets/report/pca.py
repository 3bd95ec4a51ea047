"""What each fold's PCA kept and why, read from the fitted projectors named in the PCA asset's metadata."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class FoldFit:
    """One fold's projector: components kept of those requested, and the numbers that bound them."""

    fold: int
    kept: int
    requested: int
    n_train: int
    n_design_columns: int
    n_features: int
    explained_variance_ratio: np.ndarray

    @property
    def limit(self) -> str:
        """Why the fold kept fewer components than requested ('' when it kept them all).

        A fit keeps at most min(training subjects − design rank, varying features) components: the rank the
        residualized, z-scored training matrix can have (kb_assets.stats.projection.fit_projector)."""
        if self.kept >= self.requested:
            return ""
        removed = self.n_train - self.kept
        if removed <= self.n_design_columns:
            return f"rank limit: {self.n_train} training subjects − {removed} covariate directions"
        return f"rank limit: only {self.kept} of {self.n_features} features vary"

    def describe(self) -> str:
        limit = f" ({self.limit})" if self.limit else ""
        return (f"fold {self.fold}: {self.kept} of {self.requested} components{limit}, "
                f"{self.explained_variance_ratio.sum():.1%} of the variance")


def fold_fits(projectors: Mapping[str, str | os.PathLike]) -> list[FoldFit]:
    """FoldFit per fold from the projector files (fold → .npz path), in fold order.

    Only the small arrays are read: an .npz loads member by member, so the components matrix (components ×
    features, hundreds of MB at biobank scale) is never touched."""
    fits = []
    for fold, path in sorted(projectors.items(), key=lambda item: int(item[0])):
        with np.load(path, allow_pickle=False) as saved:
            ratio = np.asarray(saved["explained_variance_ratio"], dtype=float)
            fits.append(FoldFit(
                fold=int(fold), kept=len(ratio), requested=int(saved["n_components_requested"]),
                n_train=int(saved["n_train"]), n_design_columns=len(saved["covariate_names"]),
                n_features=len(saved["means"]), explained_variance_ratio=ratio,
            ))
    return fits


def scree_per_fold_png(fits: list[FoldFit]) -> bytes:
    """Explained variance ratio per component (log scale) and cumulative, one line per fold."""
    figure = Figure(figsize=(9, 3.6), dpi=100)
    per_component, cumulative = figure.subplots(1, 2)
    for fit in fits:
        number = np.arange(1, fit.kept + 1)
        label = f"fold {fit.fold} ({fit.kept})"
        per_component.plot(number, fit.explained_variance_ratio, linewidth=1.2, label=label)
        cumulative.plot(number, np.cumsum(fit.explained_variance_ratio), linewidth=1.2, label=label)
    per_component.set_yscale("log")
    per_component.set_xlabel("component")
    per_component.set_ylabel("explained variance ratio")
    cumulative.set_xlabel("component")
    cumulative.set_ylabel("cumulative")
    cumulative.set_ylim(0, 1)
    cumulative.legend(fontsize="small", title="fold (components kept)", title_fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
