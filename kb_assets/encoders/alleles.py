"""Window statistics → region allele statistics, per strand: windows add up into their tile and strand, tiles into
the alleles made of them. An allele's vector is then read off per pooling strategy and averaged over strands."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kb_assets.encoders.pooling import PooledStats, Pooling, cosine, strand_average


@dataclass(frozen=True)
class AlleleStats:
    """Statistics of each allele's counted tokens on its forward strand and (when embedded) its reverse complement."""

    forward: PooledStats
    reverse: PooledStats | None

    def vectors(self, pooling: Pooling) -> np.ndarray:
        """[A, H] float64, averaged over strands; NaN rows for empty alleles (nothing counted)."""
        return strand_average(self.forward.vectors(pooling),
                              None if self.reverse is None else self.reverse.vectors(pooling))

    def strand_cosines(self, pooling: Pooling) -> np.ndarray:
        """[A] cosine of each allele's forward and reverse-complement vectors before averaging (NaN without RC)."""
        if self.reverse is None:
            return np.full(len(self.forward), np.nan)
        return cosine(self.forward.vectors(pooling), self.reverse.vectors(pooling))


def allele_stats(windows: pd.DataFrame, window_stats: PooledStats, allele_tiles: pd.Series, n_tiles: int,
                 both_strands: bool) -> AlleleStats:
    """windows: tile, reverse_complement (one row per window, row for row with `window_stats`); allele_tiles: per
    allele the list of its tile numbers."""
    group = 2 * windows["tile"].to_numpy(np.int64) + windows["reverse_complement"].to_numpy(bool)
    per_tile_strand = window_stats.group(group, 2 * n_tiles)
    lengths = allele_tiles.map(len).to_numpy(np.int64)
    members = np.concatenate([np.asarray(t, dtype=np.int64) for t in allele_tiles]) if len(allele_tiles) else \
        np.empty(0, np.int64)
    incidence = sp.csr_matrix((np.ones(len(members)), (np.repeat(np.arange(len(allele_tiles)), lengths), members)),
                              shape=(len(allele_tiles), n_tiles))
    forward = per_tile_strand.take(np.arange(0, 2 * n_tiles, 2)).combine(incidence)
    reverse = per_tile_strand.take(np.arange(1, 2 * n_tiles, 2)).combine(incidence) if both_strands else None
    return AlleleStats(forward, reverse)
