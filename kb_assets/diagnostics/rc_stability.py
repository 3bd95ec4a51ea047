"""RC-averaging stability: how much averaging a sequence's embedding with its reverse complement's changes it.

DNABERT-2 is not RC-equivariant, so the recipe embeds each region twice, as read (forward: the transcribed strand)
and reverse-complemented (each tokenized on its own), and averages the two. Per region and per gene:

    cosine_forward_rc       cos(F, R)           F = embed(forward), R = embed(reverse complement), neither averaged
    cosine_forward_average  cos(F, (F + R)/2)   how far averaging moves the vector the forward strand alone gives
    cosine_rc_average       cos(R, (F + R)/2)
    relative_change         ‖(F + R)/2 − F‖ / ‖F‖ = ‖R − F‖ / (2‖F‖)

Gene vectors F and R pool their regions' vectors with the recipe's region_to_gene weights, and (F + R)/2 is then
exactly the recipe's RC-averaged gene vector (pooling is linear). A sequence equal to its own reverse complement
has F = R: every cosine is 1 and the relative change 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kb_assets.diagnostics.vectors import cosine, gene_table, pool_regions
from kb_assets.encoders.gene_pooling import RegionToGene

# Gene length bins (bases embedded per gene): log-spaced, fixed so that summaries of two recipes line up.
LENGTH_BIN_EDGES = (0, 1_000, 3_000, 10_000, 30_000, 100_000)
MOST_MOVED = 10


@dataclass(frozen=True)
class RcStability:
    genes: pd.DataFrame  # one row per gene: the cosines, relative_change, length_bin, moved_rank (1 = moved most)
    regions: pd.DataFrame  # one row per region: the same cosines and relative change
    summary: pd.DataFrame  # grouping ("chromosome" | "length"), group, n_genes and cosine statistics


def length_bin(length_bp: pd.Series) -> pd.Series:
    """The LENGTH_BIN_EDGES bin of each length, as an ordered label ("1–3 kb", "≥ 100 kb")."""
    edges = [*LENGTH_BIN_EDGES, np.inf]
    labels = [f"{_kb(low)}–{_kb(high)} kb" for low, high in zip(edges[:-2], edges[1:-1])]
    labels.append(f"≥ {_kb(edges[-2])} kb")
    return pd.cut(length_bp, bins=edges, labels=labels, right=False)


def _kb(bases: float) -> str:
    return f"{bases / 1000:g}"


def _cosines(forward: np.ndarray, reverse: np.ndarray) -> dict[str, np.ndarray]:
    average = (forward + reverse) / 2
    forward_norm = np.linalg.norm(forward, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative_change = np.where(forward_norm > 0, np.linalg.norm(average - forward, axis=1) / forward_norm, np.nan)
    return {
        "cosine_forward_rc": cosine(forward, reverse),
        "cosine_forward_average": cosine(forward, average),
        "cosine_rc_average": cosine(reverse, average),
        "relative_change": relative_change,
    }


def rc_stability(regions: pd.DataFrame, forward: np.ndarray, reverse: np.ndarray,
                 region_to_gene: RegionToGene) -> RcStability:
    """The module's cosines per region and per gene, and their summary by chromosome and by gene length.

    regions: region_id, gene_id, gene_name, gene_order, chrom, length (reference regions, any chromosomes);
    forward / reverse: [R, H] row-aligned with `regions`: each region's sequence embedded alone, and its reverse
    complement embedded alone (rc "none", the recipe's pooling and windows).
    """
    forward = np.asarray(forward, dtype=np.float64)
    reverse = np.asarray(reverse, dtype=np.float64)
    region_table = regions[["region_id", "gene_id", "gene_name", "chrom", "length"]].reset_index(drop=True).assign(
        **_cosines(forward, reverse))

    genes = gene_table(regions)
    genes = genes.assign(
        length_bin=length_bin(genes["length_bp"]),
        **_cosines(pool_regions(regions, forward, region_to_gene), pool_regions(regions, reverse, region_to_gene)),
    )
    genes["moved_rank"] = genes["cosine_forward_average"].rank(method="first", na_option="bottom").astype("int64")
    return RcStability(genes=genes, regions=region_table, summary=_summary(genes))


def _summary(genes: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for grouping, column in (("chromosome", "chrom"), ("length", "length_bin")):
        # Chromosomes in the order the genes come (gene-set order), length bins in bin order; empty bins left out.
        groups = genes.groupby(column, sort=column == "length_bin", observed=True)
        frame = groups.agg(
            n_genes=("gene_id", "size"),
            mean_cosine_forward_rc=("cosine_forward_rc", "mean"),
            median_cosine_forward_rc=("cosine_forward_rc", "median"),
            min_cosine_forward_rc=("cosine_forward_rc", "min"),
            mean_cosine_forward_average=("cosine_forward_average", "mean"),
            mean_relative_change=("relative_change", "mean"),
        ).reset_index().rename(columns={column: "group"})
        frames.append(frame.assign(group=frame["group"].astype(str), grouping=grouping))
    summary = pd.concat(frames, ignore_index=True)
    return summary[["grouping", "group", *[c for c in summary.columns if c not in ("grouping", "group")]]]


def most_moved(genes: pd.DataFrame, n: int = MOST_MOVED) -> pd.DataFrame:
    """The `n` genes whose vector averaging moves most (lowest cosine between forward and average)."""
    return genes.sort_values("moved_rank").head(n)
