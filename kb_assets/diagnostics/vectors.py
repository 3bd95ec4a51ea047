"""Vectors for the diagnostics, read from what gene_embeddings made: the cached statistics of every window hold every
pooling strategy and both strands, so the diagnostics cost no forward pass beyond windows never embedded (the
reverse strand when the recipe embeds one strand)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kb_assets.encoders.alleles import AlleleStats, allele_stats
from kb_assets.encoders.engine import WindowBatch, WindowTokenizer, cut_tile_windows
from kb_assets.encoders.gene_pooling import RegionToGene, region_weights
from kb_assets.encoders.pooling import PooledStats, Pooling, cosine
from kb_assets.encoders.windows import ModelWindow
from kb_assets.genome.tiles import Tile
from kb_assets.storage import EmbeddingCache

Embedder = Callable[[list[ModelWindow]], Iterable[WindowBatch]]

__all__ = ["ReferenceStats", "cosine", "gene_table", "pool_regions", "reference_stats"]


@dataclass(frozen=True)
class ReferenceStats:
    """The reference alleles of one chromosome's regions, both strands, and their forward-strand tiles."""

    regions: pd.DataFrame  # the reference regions (rows of `alleles`)
    alleles: AlleleStats  # per region: forward and reverse-complement statistics
    tile_region: np.ndarray  # [T] row of `regions` each forward tile belongs to
    tile_order: np.ndarray  # [T] position of the tile in its region, 5'→3'
    tiles: PooledStats  # [T] forward-strand statistics of each tile

    def strand_vectors(self, pooling: Pooling) -> tuple[np.ndarray, np.ndarray]:
        """([R, H] forward, [R, H] reverse complement) region vectors, neither averaged."""
        return self.alleles.forward.vectors(pooling), self.alleles.reverse.vectors(pooling)

    def vectors(self, pooling: Pooling, rc_mode: str) -> np.ndarray:
        """[R, H] region vectors as the recipe makes them (RC-averaged unless rc_mode is none)."""
        forward, reverse = self.strand_vectors(pooling)
        return (forward + reverse) / 2 if rc_mode == "average" else forward


def reference_stats(regions: pd.DataFrame, tiles: pd.DataFrame, allele_tiles: pd.DataFrame,
                    tokenizer: WindowTokenizer, cache: EmbeddingCache, embed: Embedder, hidden_size: int,
                    window_tokens: int, window_overlap: int) -> tuple[ReferenceStats, int]:
    """Both strands of every reference region through the cache; and how many windows had to be embedded.

    regions: the reference_sequences partition; tiles / allele_tiles: tokenized_genes' tables of the partition.
    """
    reference = allele_tiles[allele_tiles["allele"] == 0].set_index("region_id").reindex(regions["region_id"])
    by_number = tiles.set_index("tile")
    numbers = [list(t) for t in reference["tiles"]]
    flat = [int(t) for region in numbers for t in region]
    cut = cut_tile_windows(tokenizer, [Tile(by_number.at[t, "sequence"], int(by_number.at[t, "core_start"]),
                                            int(by_number.at[t, "core_end"])) for t in flat],
                           True, window_tokens, window_overlap)
    stats, use = cache.fill(cut.windows, hidden_size, embed)
    windows = pd.DataFrame({"tile": cut.tile, "reverse_complement": cut.reverse_complement})
    positions = np.cumsum([0, *map(len, numbers)])
    per_region = pd.Series([list(range(positions[i], positions[i + 1])) for i in range(len(numbers))])
    per_tile = stats.group(np.where(cut.reverse_complement, -1, cut.tile), len(flat))
    return ReferenceStats(
        regions=regions.reset_index(drop=True),
        alleles=allele_stats(windows, stats, per_region, len(flat), True),
        tile_region=np.repeat(np.arange(len(numbers)), list(map(len, numbers))),
        tile_order=np.concatenate([np.arange(len(n)) for n in numbers]) if numbers else np.empty(0, np.int64),
        tiles=per_tile,
    ), use.embedded


def gene_table(regions: pd.DataFrame) -> pd.DataFrame:
    """One row per gene of `regions`, in gene-set order: gene_id, gene_name, gene_order, chrom, n_regions, length_bp
    (the bases its regions hold: what is embedded)."""
    return (regions.groupby("gene_id", sort=False)
            .agg(gene_name=("gene_name", "first"), gene_order=("gene_order", "first"), chrom=("chrom", "first"),
                 n_regions=("region_id", "size"), length_bp=("length", "sum"))
            .reset_index().sort_values("gene_order", kind="stable").reset_index(drop=True))


def pool_regions(regions: pd.DataFrame, region_vectors: np.ndarray, region_to_gene: RegionToGene) -> np.ndarray:
    """[G, H] float64 gene vectors, rows as `gene_table(regions)`: the region vectors (row-aligned with `regions`)
    weighted per `region_to_gene`, as gene_embeddings pools the reference (empty regions left out)."""
    genes = gene_table(regions)
    weights = region_weights(regions, region_to_gene).to_numpy()
    empty = np.isnan(region_vectors).any(axis=1)
    weights = np.where(empty, 0.0, weights)
    rows = pd.Index(genes["gene_id"]).get_indexer(regions["gene_id"])
    pooled = np.zeros((len(genes), region_vectors.shape[1]), dtype=np.float64)
    total = np.zeros(len(genes))
    np.add.at(pooled, rows, np.nan_to_num(region_vectors.astype(np.float64)) * weights[:, None])
    np.add.at(total, rows, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pooled / total[:, None]
