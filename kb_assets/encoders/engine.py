"""The embedding engine: tiles → token windows (both strands) → length-sorted token-budget batches → model → pooled
statistics of each window's counted tokens.

What a window yields (`PooledStats`: sums, counts, maxima, [CLS]) is all any pooling strategy needs, so one forward
pass serves mean, cls and max, and windows are cached by content (`ModelWindow.key`) and combined later into tiles,
region alleles and genes (kb_assets.encoders.pooling).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from kb_assets.encoders.pooling import PooledStats
from kb_assets.encoders.windows import ModelWindow, check_window_options, tile_windows
from kb_assets.genome.tiles import Tile

RcMode = Literal["average", "none"]
RC_MODES: tuple[str, ...] = ("average", "none")
# Linear layers skip padding (the model unpads), but attention does not, and every padded position counts
# against the engine's padding fraction.
MAX_BATCH_PADDING = 0.05
# progress(tokens_done, tokens_total), called after every batch.
ProgressCallback = Callable[[int, int], None]


class WindowTokenizer(Protocol):
    """What the engine needs of a tokenizer (DNABERT-2's BPE, Caduceus' characters, a transformers tokenizer)."""

    version: str
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    pad_id: int
    unk_ids: frozenset[int]

    def encode_batch_with_offsets(self, sequences: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]: ...


@dataclass(frozen=True)
class EmbedStats:
    """What one embed call did. Tokens are model inputs: specials included, both strands counted."""

    n_windows: int
    base_pairs: int
    real_tokens: int
    computed_tokens: int  # real tokens plus the padding that batching added
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def base_pairs_per_second(self) -> float:
        return self.base_pairs / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0


@dataclass(frozen=True)
class TileWindows:
    """The windows of a list of tiles, and for each window the tile and strand it belongs to."""

    windows: list[ModelWindow]
    tile: np.ndarray  # [W] int64: position of the tile in the input list
    reverse_complement: np.ndarray  # [W] bool


def check_embed_options(rc: str, window_tokens: int, window_overlap: int, max_window_tokens: int,
                        batch_tokens: int, n_specials: int) -> None:
    """Reject settings the engine cannot honour before any work is done."""
    check_window_options(window_tokens, window_overlap, n_specials)
    if rc not in RC_MODES:
        raise ValueError(f"rc must be one of {RC_MODES} (got {rc!r})")
    if window_tokens > max_window_tokens:
        raise ValueError(f"window_tokens {window_tokens} exceeds the model context of {max_window_tokens} tokens")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive (got {batch_tokens})")


def cut_tile_windows(tokenizer: WindowTokenizer, tiles: Sequence[Tile], both_strands: bool, window_tokens: int,
                     window_overlap: int) -> TileWindows:
    """Tokenize every tile (and, with `both_strands`, its reverse complement on its own) and cut it into windows."""
    strands = [False, True] if both_strands else [False]
    oriented = [tile.reverse_complement() if is_rc else tile for is_rc in strands for tile in tiles]
    encoded = tokenizer.encode_batch_with_offsets([tile.sequence for tile in oriented]) if oriented else []
    windows, tile_of, strand_of = [], [], []
    for position, (tile, (ids, offsets)) in enumerate(zip(oriented, encoded)):
        cut = tile_windows(ids, offsets, tile.core_start, tile.core_end, tokenizer.prefix_ids, tokenizer.suffix_ids,
                           window_tokens, window_overlap)
        windows.extend(cut)
        tile_of.extend([position % len(tiles)] * len(cut))
        strand_of.extend([strands[position // len(tiles)]] * len(cut))
    return TileWindows(windows, np.array(tile_of, dtype=np.int64), np.array(strand_of, dtype=bool))


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_padding: float = MAX_BATCH_PADDING) -> list[list[int]]:
    """Group window indices, longest first, into batches whose padded size (windows × the batch's longest window)
    stays within `batch_tokens` and whose padding stays within `max_padding` of it; a window longer than the
    budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    batch_real_tokens = 0
    for index in order:
        if batches:
            # The first window of a batch is its longest, so adding one makes the padded size (size + 1) × that.
            padded_size = (len(batches[-1]) + 1) * lengths[batches[-1][0]]
            real_tokens = batch_real_tokens + lengths[index]
            if padded_size <= batch_tokens and real_tokens >= (1 - max_padding) * padded_size:
                batches[-1].append(index)
                batch_real_tokens = real_tokens
                continue
        batches.append([index])
        batch_real_tokens = lengths[index]
    return batches


def pool_counted(hidden: torch.Tensor, counted: torch.Tensor) -> PooledStats:
    """[B, L, H] hidden states and a [B, L] mask of counted tokens → the batch's PooledStats (numpy, float32)."""
    hidden = hidden.float()
    counts = counted.sum(dim=1)
    sums = (hidden * counted[..., None]).sum(dim=1)
    maxes = hidden.masked_fill(~counted[..., None], float("-inf")).amax(dim=1)
    cls_sums = hidden[:, 0] * counts[:, None]
    return PooledStats(sums=sums.cpu().numpy(), counts=counts.cpu().numpy().astype(np.int64),
                       maxes=maxes.cpu().numpy(), cls_sums=cls_sums.cpu().numpy())


@dataclass(frozen=True)
class WindowBatch:
    """One forward pass: which windows (positions in the input list), their statistics, tokens computed."""

    indices: np.ndarray
    stats: PooledStats
    real_tokens: int
    computed_tokens: int


def run_windows(
    model: torch.nn.Module,
    windows: Sequence[ModelWindow],
    *,
    unk_ids: frozenset[int],
    pad_id: int,
    batch_tokens: int,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> Iterator[WindowBatch]:
    """Forward passes over the windows in token-budget batches, longest first; yields each batch as it is done, so a
    caller can keep (cache) finished work before the rest runs."""
    lengths = [len(w.input_ids) for w in windows]
    total_tokens = sum(lengths)
    done_tokens = 0
    unknown = torch.tensor(sorted(unk_ids), dtype=torch.long)
    # Without a callback, a tqdm bar; disable=None hides it when stderr is not a terminal, delay keeps quick calls
    # silent.
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, disable=None if progress is None else True,
               delay=2.0, leave=False, desc="embedding")
    with bar, torch.inference_mode():
        for batch in plan_batches(lengths, batch_tokens):
            longest = lengths[batch[0]]
            ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
            counted = torch.zeros((len(batch), longest), dtype=torch.bool)
            for row, index in enumerate(batch):
                window = windows[index]
                ids[row, : lengths[index]] = torch.tensor(window.input_ids)
                counted[row, window.count_start : window.count_end] = True
            counted &= ~torch.isin(ids, unknown)
            batch_lengths = torch.tensor([lengths[i] for i in batch])
            mask = (torch.arange(longest)[None, :] < batch_lengths[:, None]).long()
            hidden = model(ids.to(device), mask.to(device))
            real = int(batch_lengths.sum())
            yield WindowBatch(np.array(batch, dtype=np.int64), pool_counted(hidden, counted.to(hidden.device)), real,
                              len(batch) * longest)
            done_tokens += real
            bar.update(real)
            if progress is not None:
                progress(done_tokens, total_tokens)


def run_all_windows(model: torch.nn.Module, windows: Sequence[ModelWindow], *, unk_ids: frozenset[int], pad_id: int,
                    batch_tokens: int, device: torch.device, hidden_size: int, base_pairs: int = 0,
                    progress: ProgressCallback | None = None) -> tuple[PooledStats, EmbedStats]:
    """`run_windows` collected: every window's statistics in input order, and the call's stats."""
    started = time.perf_counter()
    result = PooledStats.empty(len(windows), hidden_size)
    real = computed = 0
    for batch in run_windows(model, windows, unk_ids=unk_ids, pad_id=pad_id, batch_tokens=batch_tokens,
                             device=device, progress=progress):
        for name in ("sums", "counts", "maxes", "cls_sums"):
            getattr(result, name)[batch.indices] = getattr(batch.stats, name)
        real += batch.real_tokens
        computed += batch.computed_tokens
    stats = EmbedStats(len(windows), base_pairs, real, computed, time.perf_counter() - started)
    return result, stats
