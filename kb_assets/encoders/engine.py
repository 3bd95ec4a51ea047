"""The embedding engine: sequences → token windows (both strands) → length-sorted token-budget batches → model →
pooled window vectors → token-count-weighted sequence vectors, averaged over strands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from kb_assets.encoders.tokenizer import PAD_ID, DnaTokenizer, TokenWindow, check_window_options, token_windows
from kb_assets.errors import InputError
from kb_assets.genome.sequence import reverse_complement

Pooling = Literal["mean", "cls", "max"]
RcMode = Literal["average", "none"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "max")
RC_MODES: tuple[str, ...] = ("average", "none")
# Linear layers skip padding (the model unpads), but attention does not, and every padded position counts
# against the engine's padding fraction.
MAX_BATCH_PADDING = 0.05
# progress(tokens_done, tokens_total), called after every batch.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbedStats:
    """What one embed call did. Tokens are model inputs: [CLS]/[SEP] included, both strands counted."""

    n_sequences: int
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
class WindowEmbeddings:
    """Pooled vectors of every window of every sequence, with where each window came from (arrays of length W)."""

    vectors: np.ndarray  # [W, H] float32
    sequence_index: np.ndarray  # [W] int64: position of the sequence in the input list
    reverse_complement: np.ndarray  # [W] bool: window of the reverse-complement strand
    token_start: np.ndarray  # [W] int64: first token of the window in its strand's token list
    token_end: np.ndarray  # [W] int64: one past the last token
    weight: np.ndarray  # [W] float64: the window's share of its strand's vector (sums to 1 per sequence and strand)

    def _strand_means(self, n_sequences: int) -> tuple[np.ndarray, np.ndarray]:
        """([n, 2, H] float64 weighted window mean per strand, [n, 2] whether the strand was embedded)."""
        strand_sum = np.zeros((n_sequences, 2, self.vectors.shape[1]), dtype=np.float64)
        strand_index = self.reverse_complement.astype(np.int64)
        weighted = self.vectors.astype(np.float64) * self.weight[:, None]
        np.add.at(strand_sum, (self.sequence_index, strand_index), weighted)
        has_strand = np.zeros((n_sequences, 2), dtype=bool)
        has_strand[self.sequence_index, strand_index] = True
        return strand_sum, has_strand

    def strand_vectors(self, n_sequences: int) -> tuple[np.ndarray, np.ndarray]:
        """([n, H] forward, [n, H] reverse-complement) float64 strand vectors; the reverse rows are NaN for
        sequences embedded without their reverse complement (rc="none")."""
        strand_mean, has_strand = self._strand_means(n_sequences)
        strand_mean[~has_strand] = np.nan
        return strand_mean[:, 0], strand_mean[:, 1]

    def sequence_vectors(self, n_sequences: int) -> np.ndarray:
        """[n_sequences, H] float32: per strand the weighted mean of its windows, then the mean over strands."""
        strand_mean, has_strand = self._strand_means(n_sequences)
        n_strands = np.maximum(has_strand.sum(axis=1, keepdims=True), 1)
        return (strand_mean.sum(axis=1) / n_strands).astype(np.float32)

    def strand_cosines(self, n_sequences: int) -> np.ndarray:
        """[n] cosine between each sequence's forward and reverse-complement vectors before averaging (NaN
        without a reverse complement): 1 for a model that were RC-equivariant."""
        forward, reverse = self.strand_vectors(n_sequences)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (forward * reverse).sum(axis=1) / (np.linalg.norm(forward, axis=1) * np.linalg.norm(reverse, axis=1))


@dataclass(frozen=True)
class _Window:
    sequence_index: int
    reverse_complement: bool
    window: TokenWindow


def check_embed_options(
    pooling: str, rc: str, window_tokens: int, window_overlap: int, max_window_tokens: int, batch_tokens: int
) -> None:
    """Reject settings the engine cannot honour before any work is done."""
    check_window_options(window_tokens, window_overlap)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (got {pooling!r})")
    if rc not in RC_MODES:
        raise ValueError(f"rc must be one of {RC_MODES} (got {rc!r})")
    if window_tokens > max_window_tokens:
        raise ValueError(f"window_tokens {window_tokens} exceeds the model context of {max_window_tokens} tokens")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive (got {batch_tokens})")


def cut_windows(
    tokenizer: DnaTokenizer,
    sequences: Sequence[str],
    rc: RcMode,
    window_tokens: int,
    window_overlap: int,
) -> list[_Window]:
    """Tokenize every sequence (and, for rc="average", its reverse complement on its own) and cut it into windows."""
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise InputError(None, f"sequence {index}", f"is a {type(sequence).__name__}, not a string",
                             "pass DNA sequences as str")
    strands = [False, True] if rc == "average" else [False]
    texts = [reverse_complement(s.upper()) if is_rc else s for is_rc in strands for s in sequences]
    token_lists = tokenizer.encode_batch(texts)
    windows: list[_Window] = []
    for position, token_ids in enumerate(token_lists):
        index = position % len(sequences)
        if not token_ids:
            raise InputError(None, f"sequence {index}", "has no tokens (it is empty or only whitespace)",
                             "drop empty sequences before embedding them")
        is_rc = strands[position // len(sequences)]
        windows.extend(_Window(index, is_rc, w) for w in token_windows(token_ids, window_tokens, window_overlap))
    return windows


def window_origin(windows: Sequence[_Window]) -> dict[str, np.ndarray]:
    """Where each window of `cut_windows` came from: the WindowEmbeddings fields besides its vectors."""
    return {
        "sequence_index": np.array([w.sequence_index for w in windows], dtype=np.int64),
        "reverse_complement": np.array([w.reverse_complement for w in windows], dtype=bool),
        "token_start": np.array([w.window.token_start for w in windows], dtype=np.int64),
        "token_end": np.array([w.window.token_end for w in windows], dtype=np.int64),
        "weight": np.array([w.window.weight for w in windows], dtype=np.float64),
    }


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


def pool(hidden: torch.Tensor, lengths: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, L, H] hidden states → [B, H] fp32. `lengths` counts each row's ids including [CLS] and [SEP];
    mean and max run over the sequence tokens only (positions 1 … length − 2)."""
    if pooling == "cls":
        return hidden[:, 0].float()
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    is_sequence_token = (positions[None, :] >= 1) & (positions[None, :] < lengths[:, None] - 1)
    hidden = hidden.float()
    if pooling == "mean":
        total = (hidden * is_sequence_token[..., None]).sum(dim=1)
        return total / (lengths[:, None] - 2).to(hidden.dtype)
    return hidden.masked_fill(~is_sequence_token[..., None], float("-inf")).amax(dim=1)


def run_windows(
    model: torch.nn.Module,
    windows: Sequence[TokenWindow],
    poolings: Sequence[Pooling],
    batch_tokens: int,
    device: torch.device,
    hidden_size: int,
    progress: ProgressCallback | None,
) -> tuple[dict[str, np.ndarray], int]:
    """Per pooling, the pooled vectors [W, H] float32 of the windows in their given order (every forward pass pooled
    each way), and the tokens computed incl. padding."""
    lengths = [len(w.input_ids) for w in windows]
    total_tokens = sum(lengths)
    vectors = {pooling: np.empty((len(windows), hidden_size), dtype=np.float32) for pooling in poolings}
    computed_tokens = done_tokens = 0
    # Without a callback, a tqdm bar; disable=None hides it when stderr is not a terminal, delay keeps quick calls
    # silent.
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, disable=None if progress is None else True,
               delay=2.0, leave=False, desc="embedding")
    with bar, torch.inference_mode():
        for batch in plan_batches(lengths, batch_tokens):
            longest = lengths[batch[0]]
            ids = torch.full((len(batch), longest), PAD_ID, dtype=torch.long)
            for row, index in enumerate(batch):
                ids[row, : lengths[index]] = torch.tensor(windows[index].input_ids)
            batch_lengths = torch.tensor([lengths[i] for i in batch])
            mask = (torch.arange(longest)[None, :] < batch_lengths[:, None]).long()
            hidden = model(ids.to(device), mask.to(device))
            for pooling in poolings:
                vectors[pooling][batch] = pool(hidden, batch_lengths.to(device), pooling).cpu().numpy()
            computed_tokens += len(batch) * longest
            done_tokens += int(batch_lengths.sum())
            bar.update(int(batch_lengths.sum()))
            if progress is not None:
                progress(done_tokens, total_tokens)
    return vectors, computed_tokens


def embed_windows(
    model: torch.nn.Module,
    tokenizer: DnaTokenizer,
    sequences: Sequence[str],
    *,
    poolings: Sequence[Pooling],
    rc: RcMode,
    window_tokens: int,
    window_overlap: int,
    batch_tokens: int,
    device: torch.device,
    hidden_size: int,
    progress: ProgressCallback | None,
) -> tuple[dict[str, WindowEmbeddings], EmbedStats]:
    """Per pooling, the pooled vectors of every window of `sequences` (both strands for rc="average"), all from one
    forward pass per window; and the call's stats."""
    started = time.perf_counter()
    windows = cut_windows(tokenizer, sequences, rc, window_tokens, window_overlap) if sequences else []
    vectors, computed_tokens = run_windows(model, [w.window for w in windows], poolings, batch_tokens, device,
                                           hidden_size, progress)
    origin = window_origin(windows)
    stats = EmbedStats(
        n_sequences=len(sequences),
        n_windows=len(windows),
        base_pairs=sum(len(s) for s in sequences),
        real_tokens=sum(len(w.window.input_ids) for w in windows),
        computed_tokens=computed_tokens,
        seconds=time.perf_counter() - started,
    )
    return {pooling: WindowEmbeddings(vectors=vectors[pooling], **origin) for pooling in poolings}, stats
