"""Permutations within exchangeability blocks, and permutation p-values (plain and max-statistic).

Written here because neither scipy's ``permutation_test`` nor scikit-learn's ``permutation_test_score`` permutes
within blocks in batches that a vectorized refit can consume, nor gives family-wise p-values over components.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

# A null statistic this close to the observed one counts as reaching it: the observed value and a null drawn with
# the identity permutation are the same number up to rounding, and ties must count against the hypothesis.
_TIE_TOLERANCE = 1e-10


def exchangeability_blocks(*levels: np.ndarray | pd.Series | list) -> np.ndarray:
    """Integer block codes, one per subject: the cells of the given levels (e.g. site, then batch within site).

    Subjects are exchanged only with subjects in the same cell; with batch nested in site the cells are the
    batches, with batch crossing sites the (site, batch) pairs.
    """
    if not levels:
        raise ValueError("give at least one level (e.g. the site of each training subject)")
    columns = [np.asarray(level).astype(str) for level in levels]
    if len({len(c) for c in columns}) != 1:
        raise ValueError(f"levels have different lengths: {[len(c) for c in columns]}")
    cells = pd.MultiIndex.from_arrays(columns) if len(columns) > 1 else pd.Index(columns[0])
    return pd.factorize(cells, sort=True)[0].astype(np.int64)


def block_permutations(blocks: np.ndarray, n_permutations: int, seed: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """`n_permutations` random permutations of the subjects within their blocks, yielded as (≤ chunk) × n arrays.

    Row ``m`` maps positions to subjects: permuted data is ``data[perm[m]]``, and ``blocks[perm[m]] == blocks``.
    The draws depend on `seed` and `blocks` only, not on `chunk`.
    """
    blocks = np.asarray(blocks)
    if blocks.ndim != 1:
        raise ValueError(f"blocks must be one code per subject, got shape {blocks.shape}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    codes = pd.factorize(blocks, sort=True)[0]
    if np.bincount(codes).max() < 2:
        raise ValueError("every exchangeability block holds one subject: no permutation is possible")
    grouped = np.argsort(codes, kind="stable")  # positions, block by block
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        # Sorting code + a uniform key in [0, 1) orders subjects block by block, at random within each block;
        # writing that order onto the block-ordered positions sends every position to a subject of its block.
        keys = rng.random((size, len(codes))) + codes
        perms = np.empty((size, len(codes)), dtype=np.int64)
        perms[:, grouped] = np.argsort(keys, axis=1)
        done += size
        yield perms


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values (1 + #{null ≥ observed}) / (1 + M), per column; null is M × statistics.

    The +1 counts the observed statistic among the permutations, so the test is valid with M random draws
    (Phipson & Smyth 2010).
    """
    observed = np.atleast_1d(np.asarray(observed, dtype=float))
    null = np.asarray(null, dtype=float).reshape(len(null), -1)
    return (1 + np.sum(null >= observed - _TIE_TOLERANCE, axis=0)) / (1 + len(null))


def max_statistic_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Family-wise p-values over the columns (Westfall & Young's single-step max-statistic).

    Each observed statistic is compared with the largest of its permutation's statistics over all columns, so
    the probability that any column reaches p ≤ α under the global null is at most α.
    """
    null = np.asarray(null, dtype=float).reshape(len(null), -1)
    return permutation_p_values(observed, np.broadcast_to(null.max(axis=1)[:, None], null.shape))
