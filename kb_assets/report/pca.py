"""The residualized PCA per fold, as the run summary and the report show it: components kept against those
requested and the limit that bound them (the PCA asset's metadata), and each fold's scree (its saved model)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REQUESTED = "requested"  # kb_assets.stats.projection's n_components_reason when nothing bound the fit


def fold_lines(metadata: Mapping[str, object]) -> list[str]:
    """'fold 0: 137 of 512 components (limited by training subjects − design rank)', one per fold, from the
    PCA asset's metadata (n_components_per_fold, n_components_reason, n_components_requested); [] without them."""
    kept, reasons = metadata.get("n_components_per_fold"), metadata.get("n_components_reason")
    if not isinstance(kept, dict) or not isinstance(reasons, dict):
        return []
    requested = metadata.get("n_components_requested", "?")
    lines = []
    for fold in sorted(kept, key=int):
        reason = reasons.get(fold, "")
        why = "as requested" if reason == REQUESTED else f"limited by {reason}"
        lines.append(f"fold {fold}: {kept[fold]} of {requested} components ({why})")
    return lines


def fold_variance_ratios(models: Mapping[int, str | os.PathLike]) -> dict[int, np.ndarray]:
    """Each fold's explained variance ratio per component, from its saved model (.npz). Only that array is
    read: an .npz loads member by member, so the components (hundreds of MB at biobank scale) stay on disk."""
    ratios = {}
    for fold, path in sorted(models.items()):
        with np.load(path, allow_pickle=False) as saved:
            ratios[int(fold)] = np.asarray(saved["explained_variance_ratio_"], dtype=float)
    return ratios


def scree_per_fold_png(ratios: Mapping[int, np.ndarray]) -> bytes:
    """Explained variance ratio per component (log scale) and cumulative, one line per fold."""
    figure = Figure(figsize=(9, 3.6), dpi=100)
    per_component, cumulative = figure.subplots(1, 2)
    for fold, ratio in sorted(ratios.items()):
        number = np.arange(1, len(ratio) + 1)
        label = f"fold {fold} ({len(ratio)})"
        per_component.plot(number, ratio, linewidth=1.2, label=label)
        cumulative.plot(number, np.cumsum(ratio), linewidth=1.2, label=label)
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
