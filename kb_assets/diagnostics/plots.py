"""PNG figures of the diagnostics, drawn with matplotlib's Agg canvas (no display, no global pyplot)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kb_assets.diagnostics.encoders import ALL_GENES


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def cosine_histogram_png(series: Mapping[str, np.ndarray], title: str, unit: str = "genes") -> bytes:
    """Overlaid histograms of cosines (one per label), on shared bins spanning the values."""
    values = {label: np.asarray(v, dtype=float)[np.isfinite(v)] for label, v in series.items()}
    everything = np.concatenate([v for v in values.values()] or [np.zeros(0)])
    low = float(everything.min()) if everything.size else 0.0
    bins = np.linspace(min(low, 0.999), 1.0, 31)
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for label, v in values.items():
        axes.hist(v, bins=bins, alpha=0.6, label=f"{label} (n={len(v)})")
    axes.set_xlabel("cosine")
    axes.set_ylabel(unit)
    axes.set_title(title, fontsize="medium")
    axes.legend(fontsize="small")
    return _png(figure)


def pooling_png(pair_cosines: pd.DataFrame, half_split: pd.DataFrame) -> bytes:
    """Left: per-gene cosine between strategies, one box per pair. Right: half-split cosine per strategy."""
    figure = Figure(figsize=(9, 3.8), dpi=100)
    left, right = figure.subplots(1, 2)
    pairs = list(dict.fromkeys(zip(pair_cosines["strategy_a"], pair_cosines["strategy_b"])))
    left.boxplot([pair_cosines.loc[(pair_cosines["strategy_a"] == a) & (pair_cosines["strategy_b"] == b),
                                   "cosine"].dropna() for a, b in pairs],
                 tick_labels=[f"{a} vs {b}" for a, b in pairs])
    left.set_ylabel("cosine of gene vectors")
    left.set_title("between strategies (per gene)", fontsize="medium")
    strategies = list(dict.fromkeys(half_split["strategy"]))
    right.boxplot([half_split.loc[half_split["strategy"] == s, "half_split_cosine"].dropna() for s in strategies],
                  tick_labels=strategies)
    right.set_ylabel("cosine of window halves")
    right.set_title("half-split stability (per gene)", fontsize="medium")
    return _png(figure)


def rank_agreement_png(agreement: pd.DataFrame, strategies: tuple[str, ...]) -> bytes:
    """Heatmap of the Spearman correlation of subject-to-subject distances between every two strategies."""
    matrix = np.eye(len(strategies))
    position = {s: i for i, s in enumerate(strategies)}
    for row in agreement.itertuples():
        matrix[position[row.strategy_a], position[row.strategy_b]] = row.spearman_rho
        matrix[position[row.strategy_b], position[row.strategy_a]] = row.spearman_rho
    figure = Figure(figsize=(4.2, 3.6), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    axes.set_xticks(range(len(strategies)), strategies)
    axes.set_yticks(range(len(strategies)), strategies)
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize="small",
                  color="white" if abs(value) > 0.6 else "black")
    axes.set_title("Spearman ρ of subject distances", fontsize="medium")
    figure.colorbar(image, ax=axes)
    return _png(figure)


def token_length_png(token_lengths: pd.DataFrame) -> bytes:
    """Share of tokens by length in bases, one line per region type."""
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for region_type, frame in token_lengths.groupby("region_type", sort=False):
        axes.plot(frame["length_bp"], frame["share"], marker="o", markersize=3, label=region_type)
    axes.set_xlabel("token length (bp)")
    axes.set_ylabel("share of the region type's tokens")
    axes.legend(fontsize="small")
    return _png(figure)


def enrichment_png(tokens: pd.DataFrame, q_threshold: float) -> bytes:
    """Volcano plot: log odds of a token in exons vs background against −log10 q; q < q_threshold highlighted."""
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    tested = tokens.dropna(subset=["q_value"])
    significant = tested["q_value"] < q_threshold
    height = -np.log10(np.maximum(tested["q_value"].to_numpy(dtype=float), 1e-300))
    axes.scatter(tested["log_odds_exon"], height, s=6, c=np.where(significant, "tab:red", "tab:gray"), alpha=0.7)
    axes.axhline(-np.log10(q_threshold), color="black", linewidth=0.5, linestyle="--")
    axes.set_xlabel("log odds ratio, exon vs intron/promoter")
    axes.set_ylabel("−log10 q (BH)")
    return _png(figure)


def encoder_comparison_png(genes: pd.DataFrame, agreement: pd.DataFrame) -> bytes:
    """Per gene and encoder: forward vs reverse-complement cosine and mean vs max pooling cosine (boxes); per encoder
    pair: the per-gene Spearman ρ of subject distances (box) and the whole gene set's (diamond)."""
    figure = Figure(figsize=(11, 3.8), dpi=100)
    rc_axes, pooling_axes, rank_axes = figure.subplots(1, 3)
    encoders = list(dict.fromkeys(genes["encoder"]))
    for axes, column, title in ((rc_axes, "cosine_forward_rc", "forward vs reverse complement"),
                                (pooling_axes, "cosine_mean_max", "mean vs max pooling")):
        axes.boxplot([genes.loc[genes["encoder"] == e, column].dropna() for e in encoders], tick_labels=encoders)
        axes.set_ylabel("cosine of gene vectors")
        axes.set_title(f"{title} (per gene)", fontsize="medium")
    pairs = list(dict.fromkeys(zip(agreement["encoder_a"], agreement["encoder_b"])))
    per_gene = agreement[agreement["gene_id"] != ALL_GENES]
    rank_axes.boxplot([per_gene.loc[(per_gene["encoder_a"] == a) & (per_gene["encoder_b"] == b),
                                    "spearman_rho"].dropna() for a, b in pairs],
                      tick_labels=[f"{a}\nvs {b}" for a, b in pairs])
    overall = agreement[agreement["gene_id"] == ALL_GENES]
    rank_axes.scatter(np.arange(1, len(pairs) + 1), [
        overall.loc[(overall["encoder_a"] == a) & (overall["encoder_b"] == b), "spearman_rho"].iloc[0]
        for a, b in pairs], marker="D", color="tab:red", label="all genes", zorder=3)
    rank_axes.set_ylabel("Spearman ρ of subject distances")
    rank_axes.set_title("which subjects are alike (per gene)", fontsize="medium")
    rank_axes.legend(fontsize="small")
    return _png(figure)
