"""Model windows: a tile's tokens cut into model inputs, each token counted in exactly one window.

A tile holds its counted core and some context. Its tokens (ids with base offsets) are cut into windows of at most
the model's content length; consecutive windows overlap by at least `window_overlap` tokens, and a token in an
overlap is counted in the window where it lies farther from an edge (the overlap is split at its middle). Only
tokens that start in the tile's core are counted. So over a region, every token is counted once: a mean-pooled
region vector is the plain mean of its counted tokens' hidden states. [UNK] tokens (N and other non-ACGT bases) are
excluded by the engine when it pools (they carry no sequence).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelWindow:
    """One model input: ids with the model's special tokens around them, and the counted positions
    [count_start, count_end) within `input_ids`."""

    input_ids: tuple[int, ...]
    count_start: int
    count_end: int

    @property
    def key(self) -> bytes:
        """Content address of the window's pooled vectors: its ids and counted span (the model is keyed apart)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.asarray(self.input_ids, dtype="<u4").tobytes())
        digest.update(np.asarray([self.count_start, self.count_end], dtype="<u4").tobytes())
        return digest.digest()


def check_window_options(window_tokens: int, window_overlap: int, n_specials: int = 2) -> None:
    """A window must hold its special tokens and at least one token; the overlap must leave the windows a stride."""
    content = window_tokens - n_specials
    if content < 1:
        raise ValueError(f"window_tokens must be at least {n_specials + 1} (got {window_tokens})")
    if not 0 <= window_overlap < content:
        raise ValueError(f"window_overlap must be in [0, {content}) for window_tokens={window_tokens} "
                         f"(got {window_overlap})")


def token_spans(n_tokens: int, content: int, window_overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, count_start, count_end) token spans of the windows of `n_tokens` tokens: as few windows of
    `content` tokens as share at least `window_overlap` with the next, spread evenly from the first token to the
    last; counted spans split at the middle of each overlap so they partition [0, n_tokens)."""
    if n_tokens <= content:
        return [(0, n_tokens, 0, n_tokens)]
    n_windows = -(-(n_tokens - window_overlap) // (content - window_overlap))
    starts = [i * (n_tokens - content) // (n_windows - 1) for i in range(n_windows)]
    bounds = [(s, s + content) for s in starts]
    cuts = [0] + [(bounds[i + 1][0] + bounds[i][1]) // 2 for i in range(len(bounds) - 1)] + [n_tokens]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(bounds)]


def tile_windows(ids: Sequence[int], offsets: Sequence[tuple[int, int]], core_start: int, core_end: int,
                 prefix: Sequence[int], suffix: Sequence[int], window_tokens: int,
                 window_overlap: int) -> list[ModelWindow]:
    """The windows of one tile's tokens; only tokens starting in [core_start, core_end) are counted, and a window
    with no counted token is left out (its tokens only gave context to its neighbours)."""
    content = window_tokens - len(prefix) - len(suffix)
    starts = [start for start, _ in offsets]
    first, last = bisect_left(starts, core_start), bisect_left(starts, core_end)
    windows = []
    for start, end, count_start, count_end in token_spans(len(ids), content, window_overlap):
        count_start, count_end = max(count_start, first), min(count_end, last)
        if count_start >= count_end:
            continue
        shift = len(prefix) - start
        windows.append(ModelWindow((*prefix, *ids[start:end], *suffix), count_start + shift, count_end + shift))
    return windows


def mirrored_window(window: ModelWindow, complement: dict[int, int], n_prefix: int, n_suffix: int) -> ModelWindow:
    """The window of the reverse-complement strand at the same place, for a character-level tokenizer: the content
    ids reversed and complemented (`complement`: id → id of the complementary base), the specials kept in place, the
    counted span mirrored. An RC-equivariant model gives it the same pooled statistics as `window`."""
    ids = window.input_ids
    end = len(ids) - n_suffix
    content = [complement[token] for token in reversed(ids[n_prefix:end])]
    count_start = n_prefix + (end - window.count_end)
    count_end = n_prefix + (end - window.count_start)
    return ModelWindow((*ids[:n_prefix], *content, *ids[end:]), count_start, count_end)
