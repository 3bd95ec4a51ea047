"""Pooling comparison: mean vs CLS vs max token pooling, per gene and across a cohort.

Three views of what the choice of pooling changes:

- strategy cosines: per gene, the cosine between its reference vectors under two strategies (every pair of
  POOLINGS), the vectors made as the recipe makes them otherwise (RC mode, windows, region_to_gene).
- half-split stability: per gene and strategy, how alike two halves of the gene are. The gene's forward-strand
  tiles are listed 5'→3' (regions in transcription order, tiles in order), each weighted by its region's
  region_to_gene weight times its share of the region's counted tokens; the first ⌊n/2⌋ tiles and the other
  ⌈n/2⌉ are each averaged with those weights and compared by cosine. A gene with one tile has two identical
  halves: 1 by definition. Forward strand only, because the reverse-complement strand's tiles run 3'→5' and
  would mix the halves.
- distance rank agreement: per pair of strategies, the Spearman correlation between the subject-to-subject
  distances the two strategies give (Euclidean distance between subjects' gene vectors concatenated in gene-set
  order). Spearman is rank-based, so it is the same for distances and squared distances; no p-value is given,
  because the N(N − 1)/2 pairs of N subjects are not independent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from kb_assets.diagnostics.subjects import SampledAlleles, add_subject_distances
from kb_assets.diagnostics.vectors import ReferenceStats, cosine, gene_table, pool_regions
from kb_assets.encoders.gene_pooling import RegionToGene, region_weights
from kb_assets.encoders.pooling import Pooling
from kb_assets.genome import REFERENCE_SUBJECT


def strategy_cosines(genes: pd.DataFrame, gene_vectors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per gene × pair of strategies (in the mapping's order): the cosine between the gene's vectors under the two.

    genes: one row per gene (gene_id, gene_name, chrom); gene_vectors: strategy → [G, H] row-aligned with it.
    """
    frames = [
        genes[["gene_id", "gene_name", "chrom"]].assign(
            strategy_a=a, strategy_b=b, cosine=cosine(gene_vectors[a], gene_vectors[b]))
        for a, b in combinations(gene_vectors, 2)
    ]
    return pd.concat(frames, ignore_index=True)


def half_split_cosine(vectors: np.ndarray, weights: np.ndarray) -> float:
    """Cosine between the weighted mean of the first ⌊n/2⌋ of n ordered tile vectors and that of the other ⌈n/2⌉;
    1 for a single tile (its halves are identical by definition)."""
    if len(vectors) == 1:
        return 1.0
    half = len(vectors) // 2
    first = np.average(vectors[:half], axis=0, weights=weights[:half])
    second = np.average(vectors[half:], axis=0, weights=weights[half:])
    return float(cosine(first[None], second[None])[0])


def half_split_cosines(regions: pd.DataFrame, tile_region: np.ndarray, tile_order: np.ndarray,
                       tile_vectors: np.ndarray, tile_counts: np.ndarray, region_to_gene: RegionToGene
                       ) -> pd.DataFrame:
    """Per gene: n_tiles and half_split_cosine (see the module doc).

    regions: region_id, gene_id, gene_name, gene_order, region_index, chrom, length; per forward-strand tile: the
    row of `regions` it belongs to, its position in the region (5'→3'), its vector and its counted tokens. A tile's
    weight is its region's region_to_gene weight times its share of the region's counted tokens.
    """
    region_weight = region_weights(regions, region_to_gene).to_numpy()
    region_counts = np.bincount(tile_region, weights=tile_counts, minlength=len(regions))
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = region_weight[tile_region] * tile_counts / region_counts[tile_region]
    usable = (tile_counts > 0) & np.isfinite(tile_vectors).all(axis=1)
    order = pd.DataFrame({
        "gene_id": regions["gene_id"].to_numpy()[tile_region],
        "region_index": regions["region_index"].to_numpy()[tile_region],
        "tile_order": tile_order,
    })[usable].sort_values(["gene_id", "region_index", "tile_order"], kind="stable")
    per_gene = {
        gene_id: (len(rows), half_split_cosine(tile_vectors[rows].astype(np.float64), weight[rows]))
        for gene_id, rows in ((g, frame.index.to_numpy()) for g, frame in order.groupby("gene_id", sort=False))
    }
    genes = gene_table(regions)[["gene_id", "gene_name", "chrom"]]
    return genes.assign(
        n_tiles=genes["gene_id"].map(lambda g: per_gene.get(g, (0, np.nan))[0]).astype("int64"),
        half_split_cosine=genes["gene_id"].map(lambda g: per_gene.get(g, (0, np.nan))[1]).astype("float64"))


def cohort_subjects(subjects: Sequence[pd.DataFrame], max_subjects: int) -> tuple[list[str], int]:
    """(the first `max_subjects` subjects by id that every chromosome kept, how many there are in all); REF is not
    a subject."""
    present = None
    for frame in subjects:
        subjects = set(frame["subject_id"].astype(str)) - {REFERENCE_SUBJECT}
        present = subjects if present is None else present & subjects
    eligible = sorted(present or ())
    return eligible[:max_subjects], len(eligible)


def distance_rank_agreement(squared_distances: Mapping[str, np.ndarray], label: str = "strategy") -> pd.DataFrame:
    """Per pair of the mapping's keys (pooling strategies, or encoders with label="encoder"): {label}_a, {label}_b,
    spearman_rho of the subjects' pairwise distances, n_subjects, n_pairs. NaN when there are fewer than two pairs
    or one side's distances are all equal."""
    rows = []
    for a, b in combinations(squared_distances, 2):
        n = len(squared_distances[a])
        upper = np.triu_indices(n, k=1)
        x, y = squared_distances[a][upper], squared_distances[b][upper]
        defined = len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0
        rho = float(spearmanr(x, y).statistic) if defined else float("nan")
        rows.append({f"{label}_a": a, f"{label}_b": b, "spearman_rho": rho, "n_subjects": n, "n_pairs": len(x)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PoolingComparisonResult:
    genes: pd.DataFrame  # gene_table of every compared gene
    pair_cosines: pd.DataFrame  # strategy_cosines
    half_split: pd.DataFrame  # gene_id, gene_name, chrom, strategy, n_tiles, half_split_cosine
    agreement: pd.DataFrame  # distance_rank_agreement over the sampled subjects


class PoolingComparison:
    """The three views over several chromosomes: `add` one chromosome's reference statistics and sampled subjects
    at a time, then `result`. Gene and subject vectors are made as the recipe makes them (its RC mode and
    region_to_gene); half splits use the forward strand."""

    def __init__(self, strategies: Sequence[Pooling], n_subjects: int, rc_mode: str, region_to_gene: RegionToGene):
        self.strategies = tuple(strategies)
        self.rc_mode = rc_mode
        self.region_to_gene = region_to_gene
        self.squared_distances = {p: np.zeros((n_subjects, n_subjects)) for p in self.strategies}
        self.gene_vectors: dict[str, list[np.ndarray]] = {p: [] for p in self.strategies}
        self.region_frames: list[pd.DataFrame] = []
        self.half_splits: list[pd.DataFrame] = []

    def add(self, reference: ReferenceStats, sample: SampledAlleles) -> None:
        regions = reference.regions
        for pooling in self.strategies:
            self.gene_vectors[pooling].append(
                pool_regions(regions, reference.vectors(pooling, self.rc_mode), self.region_to_gene))
            add_subject_distances(self.squared_distances[pooling], regions, sample, pooling, self.region_to_gene)
            self.half_splits.append(half_split_cosines(
                regions, reference.tile_region, reference.tile_order, reference.tiles.vectors(pooling),
                reference.tiles.counts, self.region_to_gene).assign(strategy=pooling))
        self.region_frames.append(regions)

    def result(self) -> PoolingComparisonResult:
        genes = gene_table(pd.concat(self.region_frames, ignore_index=True))
        pair_cosines = strategy_cosines(genes, {p: np.concatenate(v) for p, v in self.gene_vectors.items()})
        half_split = pd.concat(self.half_splits, ignore_index=True)[
            ["gene_id", "gene_name", "chrom", "strategy", "n_tiles", "half_split_cosine"]]
        return PoolingComparisonResult(genes, pair_cosines, half_split,
                                       distance_rank_agreement(self.squared_distances))
