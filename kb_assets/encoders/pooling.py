"""Pooled statistics: what the model gave a set of counted tokens, kept additive so that windows pool into tiles,
tiles into region alleles, and any pooling strategy is read off at the end.

For a set of counted tokens (excluding [UNK]) the statistics are the sum of their hidden states, their count, the
element-wise maximum, and the count-weighted sum of the windows' first-position ([CLS]) states. Sums and counts add,
maxima take the maximum; so a region's mean-pooled vector is exactly the mean over its counted tokens, each counted
once, however its tokens were split into tiles and windows. `cls` of a multi-window sequence is the mean of its
windows' [CLS] states weighted by the tokens each window counts; `max` is the maximum over its counted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

Pooling = Literal["mean", "cls", "max"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "max")


@dataclass(frozen=True)
class PooledStats:
    """Per item (window, tile strand, allele strand …): statistics of its counted tokens."""

    sums: np.ndarray  # [n, H] Σ hidden states
    counts: np.ndarray  # [n] counted tokens
    maxes: np.ndarray  # [n, H] element-wise max (-inf where counts is 0)
    cls_sums: np.ndarray  # [n, H] Σ over windows of counted tokens × the window's [CLS] state

    def __len__(self) -> int:
        return len(self.counts)

    @classmethod
    def empty(cls, n: int, hidden_size: int) -> PooledStats:
        return cls(np.zeros((n, hidden_size)), np.zeros(n, np.int64), np.full((n, hidden_size), -np.inf),
                   np.zeros((n, hidden_size)))

    def take(self, rows: np.ndarray) -> PooledStats:
        return PooledStats(self.sums[rows], self.counts[rows], self.maxes[rows], self.cls_sums[rows])

    def group(self, groups: np.ndarray, n_groups: int) -> PooledStats:
        """Combine items into groups (`groups[i]` is item i's group; -1 leaves it out)."""
        kept = np.flatnonzero(groups >= 0)
        incidence = sp.csr_matrix((np.ones(len(kept)), (groups[kept], kept)), shape=(n_groups, len(self)))
        return self.combine(incidence)

    def combine(self, incidence: sp.csr_matrix) -> PooledStats:
        """Groups × items 0/1 incidence → one statistic per group (an item may feed several groups)."""
        incidence = sp.csr_matrix(incidence)
        maxes = np.full((incidence.shape[0], self.sums.shape[1]), -np.inf)
        members, starts = incidence.indices, incidence.indptr
        filled = np.flatnonzero(np.diff(starts) > 0)
        if len(filled):
            reduced = np.maximum.reduceat(self.maxes[members], starts[filled], axis=0)
            maxes[filled] = reduced
        return PooledStats(
            sums=np.asarray(incidence @ self.sums.astype(np.float64)),
            counts=np.asarray(incidence @ self.counts.astype(np.float64)).astype(np.int64),
            maxes=maxes,
            cls_sums=np.asarray(incidence @ self.cls_sums.astype(np.float64)),
        )

    def vectors(self, pooling: Pooling) -> np.ndarray:
        """[n, H] float64 vectors by `pooling`; NaN rows where nothing was counted."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} (got {pooling!r})")
        with np.errstate(invalid="ignore", divide="ignore"):
            if pooling == "mean":
                out = self.sums / self.counts[:, None]
            elif pooling == "cls":
                out = self.cls_sums / self.counts[:, None]
            else:
                out = self.maxes.astype(np.float64, copy=True)
        out[self.counts == 0] = np.nan
        return out


def strand_average(forward: np.ndarray, reverse: np.ndarray | None) -> np.ndarray:
    """The RC-averaged vector (forward alone when the reverse strand was not embedded)."""
    return forward if reverse is None else (forward + reverse) / 2.0


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two [n, H] arrays (float64); NaN where either row is zero or NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(norms > 0, (a * b).sum(axis=-1) / norms, np.nan), -1.0, 1.0)
