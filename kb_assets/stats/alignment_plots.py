"""PNG figures of the gene–brain alignment for materialization metadata (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kb_assets.stats.alignment import FoldAlignment


def null_distribution_png(results: Sequence[FoldAlignment]) -> bytes:
    """Per fold: the permutation null of the held-out first canonical correlation (and of the label metric when
    there is one), with the observed value as a vertical line and its p-value in the title."""
    with_null = [r for r in results if "heldout_r" in r.null]
    if not with_null:
        raise ValueError("no fold has a permutation null (n_permutations was 0)")
    has_label = all("label" in r.null for r in with_null)
    rows = 2 if has_label else 1
    figure = Figure(figsize=(3.2 * len(with_null), 2.8 * rows), dpi=100)
    axes = np.asarray(figure.subplots(rows, len(with_null), squeeze=False))
    for column, result in enumerate(with_null):
        first = result.canonical.iloc[0]
        _null_panel(axes[0, column], result.null["heldout_r"][:, 0], first["heldout_r"], first["p_value"],
                    f"fold {result.fold}: held-out r₁", "held-out canonical correlation")
        if has_label:
            label = result.prediction.set_index("target").loc["label"]
            _null_panel(axes[1, column], result.null["label"], label["value"], label["p_value"],
                        f"fold {result.fold}: label {label['metric'].upper()}", f"held-out {label['metric']}")
    figure.tight_layout()
    return _png(figure)


def fold_bars_png(results: Sequence[FoldAlignment]) -> bytes:
    """Held-out canonical correlation per fold and component (★ where the family-wise p < 0.05), and the label
    metric per fold when there is one."""
    components = min(len(r.canonical) for r in results)
    folds = [r.fold for r in results]
    has_label = all("label" in set(r.prediction["target"]) for r in results)
    figure = Figure(figsize=(6.5 if has_label else 4.5, 3.5), dpi=100)
    axes = figure.subplots(1, 2 if has_label else 1, squeeze=False)[0]
    width = 0.8 / components
    x = np.arange(len(folds))
    for j in range(components):
        values = [r.canonical["heldout_r"].iloc[j] for r in results]
        bars = axes[0].bar(x + (j - (components - 1) / 2) * width, values, width, label=f"component {j + 1}")
        for bar, result in zip(bars, results):
            if result.canonical["p_fwe"].iloc[j] < 0.05:
                axes[0].annotate("★", (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0)),
                                 ha="center", va="bottom", fontsize=8)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_xticks(x, [str(f) for f in folds])
    axes[0].set_xlabel("fold")
    axes[0].set_ylabel("held-out canonical correlation")
    axes[0].legend(fontsize="small")
    if has_label:
        labels = [r.prediction.set_index("target").loc["label"] for r in results]
        axes[1].bar(x, [label["value"] for label in labels], color="tab:green")
        metric = labels[0]["metric"]
        axes[1].axhline(0.5 if metric == "auc" else 0.0, color="black", linewidth=0.8, linestyle="--")
        axes[1].set_xticks(x, [str(f) for f in folds])
        axes[1].set_xlabel("fold")
        axes[1].set_ylabel(f"held-out {metric}")
    figure.tight_layout()
    return _png(figure)


def encoder_comparison_png(summary: pd.DataFrame) -> bytes:
    """Encoders side by side (`summarize_encoders`): held-out first canonical correlation (and label metric) per
    fold as points, the mean over folds as a bar."""
    encoders = list(dict.fromkeys(summary["encoder"]))
    has_label = summary["label_metric"].notna().all()
    figure = Figure(figsize=(3 + 1.2 * len(encoders) * (2 if has_label else 1), 3.6), dpi=100)
    axes = figure.subplots(1, 2 if has_label else 1, squeeze=False)[0]
    panels = [("heldout_r1", "held-out r₁")]
    if has_label:
        panels.append(("label_metric", f"held-out {summary['label_metric_name'].iloc[0]}"))
    for axis, (column, title) in zip(axes, panels):
        for i, encoder in enumerate(encoders):
            values = summary.loc[summary["encoder"] == encoder, column].to_numpy()
            axis.bar(i, values.mean(), color=f"C{i}", alpha=0.5)
            axis.scatter(np.full(len(values), i), values, color=f"C{i}", zorder=3, s=14)
        axis.set_xticks(range(len(encoders)), encoders, rotation=20)
        axis.set_ylabel(title)
        axis.axhline(0, color="black", linewidth=0.8)
    figure.tight_layout()
    return _png(figure)


def gene_loadings_png(gene_loadings: pd.DataFrame) -> bytes:
    """Per gene, its share of the first canonical variate's gene-side weight (mean over folds, with the folds'
    range), genes in gene-set order (kb_assets.stats.evaluation.gene_loadings)."""
    first = gene_loadings[gene_loadings["component"] == 1]
    by_gene = first.groupby("gene_name", sort=False)["weight_share"]
    mean, low, high = by_gene.mean(), by_gene.min(), by_gene.max()
    figure = Figure(figsize=(max(4.0, 0.35 * len(mean) + 1.5), 3.2), dpi=100)
    axis = figure.subplots()
    x = np.arange(len(mean))
    axis.bar(x, mean.to_numpy(), yerr=[mean - low, high - mean], capsize=2, color="#4c72b0")
    axis.set_xticks(x, mean.index, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel("share of gene weight (r₁)")
    figure.tight_layout()
    return _png(figure)


def _null_panel(axis, null: np.ndarray, observed: float, p_value: float, title: str, xlabel: str) -> None:
    axis.hist(null, bins=min(40, max(10, len(null) // 10)), color="tab:gray", alpha=0.8)
    axis.axvline(observed, color="tab:red", linewidth=2)
    axis.set_title(f"{title}, p = {p_value:.3g}", fontsize="small")
    axis.set_xlabel(xlabel, fontsize="small")
    axis.set_ylabel("permutations", fontsize="small")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
