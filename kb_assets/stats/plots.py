"""PNG figures for materialization metadata, drawn with matplotlib's Agg canvas (no display, no global pyplot)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def scree_plot_png(explained_variance_ratio: np.ndarray) -> bytes:
    """Per-component and cumulative explained variance ratio against component number."""
    ratio = np.asarray(explained_variance_ratio, dtype=float)
    number = np.arange(1, len(ratio) + 1)
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(number, ratio, color="tab:blue", label="per component")
    axes.set_xlabel("component")
    axes.set_ylabel("explained variance ratio")
    cumulative = axes.twinx()
    cumulative.plot(number, np.cumsum(ratio), color="tab:orange", label="cumulative")
    cumulative.set_ylabel("cumulative")
    cumulative.set_ylim(0, 1)
    figure.legend(loc="center right", bbox_to_anchor=(0.85, 0.5))
    figure.tight_layout()
    return _png(figure)


MAX_LEGEND_ENTRIES = 12  # a real cohort's batches (tens of levels) would bury the axes under a longer legend


def pc_scatter_png(scores_2d: np.ndarray, colour_labels: list | np.ndarray) -> bytes:
    """Subjects on their first two components, one colour per label value."""
    scores = np.asarray(scores_2d, dtype=float)
    labels = np.asarray(colour_labels).astype(str)
    if scores.ndim != 2 or scores.shape[1] < 2 or len(labels) != len(scores):
        raise ValueError(f"need subjects × 2 scores and one label per subject, got {scores.shape} and {len(labels)}")
    figure = Figure(figsize=(5, 4.5), dpi=100)
    axes = figure.add_subplot()
    for label in sorted(set(labels)):
        chosen = labels == label
        axes.scatter(scores[chosen, 0], scores[chosen, 1], s=8, alpha=0.7, label=label)
    axes.set_xlabel("pc_1")
    axes.set_ylabel("pc_2")
    n_labels = len(set(labels))
    if n_labels <= MAX_LEGEND_ENTRIES:
        axes.legend(markerscale=2, fontsize="small")
    else:
        axes.set_title(f"{n_labels} label values (too many for a legend)", fontsize="small")
    figure.tight_layout()
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
