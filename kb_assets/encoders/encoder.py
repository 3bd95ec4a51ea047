"""`load_encoder`: a DNABERT-2 checkpoint folder (or a cached hub id) → an `Encoder` that embeds DNA sequences.

Nothing from the checkpoint folder is executed: config.json is read as data, weights are loaded with safetensors
or `torch.load(weights_only=True)`, and the model is kb_assets' own PyTorch code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from kb_assets.encoders.checkpoint import check_weights, read_config, read_weights, weights_file
from kb_assets.encoders.engine import (
    EmbedStats,
    ProgressCallback,
    RcMode,
    TileWindows,
    check_embed_options,
    cut_tile_windows,
    run_all_windows,
)
from kb_assets.encoders.model import DnaBert2Model
from kb_assets.encoders.pooling import PooledStats, Pooling, strand_average
from kb_assets.encoders.tokenizer import DnaTokenizer, load_tokenizer
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256
from kb_assets.genome.tiles import allele_tiles, tile_spans

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class StrandStats:
    """Per input sequence, the pooled statistics of its forward strand and (rc="average") its reverse complement."""

    forward: PooledStats
    reverse: PooledStats | None

    def vectors(self, pooling: Pooling) -> np.ndarray:
        """[n, H] float64: per strand the pooled vector, then the mean over strands; NaN rows for a sequence with no
        counted token (empty, or only N)."""
        return strand_average(self.forward.vectors(pooling),
                              None if self.reverse is None else self.reverse.vectors(pooling))


class Encoder:
    """A loaded DNABERT-2: `model` (hidden states), `tokenizer`, and `embed` (pooled vectors per sequence)."""

    def __init__(self, model: DnaBert2Model, tokenizer: DnaTokenizer, *, model_id: str, model_sha256: str):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.model_sha256 = model_sha256
        self.last_stats: EmbedStats | None = None

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.word_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embeddings.word_embeddings.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_tokens(self) -> int:
        """The model context in tokens, specials included."""
        return self.model.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def tokenizer_version(self) -> str:
        """sha256 of the checkpoint's tokenizer.json."""
        return self.tokenizer.version

    def run_windows(self, windows: TileWindows, batch_tokens: int = 16384, base_pairs: int = 0,
                    progress: ProgressCallback | None = None) -> PooledStats:
        """Every window's pooled statistics, in order. Sets `last_stats`."""
        stats, self.last_stats = run_all_windows(
            self.model, windows.windows, unk_ids=self.tokenizer.unk_ids, pad_id=self.tokenizer.pad_id,
            batch_tokens=batch_tokens, device=self.device, hidden_size=self.hidden_size, base_pairs=base_pairs,
            progress=progress)
        return stats

    def embed_strands(
        self,
        sequences: Sequence[str],
        rc: RcMode = "average",
        window_tokens: int = 512,
        window_overlap: int = 64,
        batch_tokens: int = 16384,
        tile_bp: int | None = None,
        tile_context_bp: int = 0,
        progress: ProgressCallback | None = None,
    ) -> StrandStats:
        """Pooled statistics of every sequence's counted tokens, per strand.

        Each sequence is cut into tiles of `tile_bp` bases plus `tile_context_bp` of context on each side (default:
        one tile), each tile tokenized on its own (uppercased) and cut into windows of ≤ `window_tokens` ids that
        share `window_overlap` tokens; every token is counted once, [UNK] never. rc="average" does the same for the
        reverse complement. Windows are batched longest first under `batch_tokens` padded tokens per forward pass.
        """
        check_embed_options(rc, window_tokens, window_overlap, self.max_tokens, batch_tokens,
                            len(self.tokenizer.prefix_ids) + len(self.tokenizer.suffix_ids))
        tiles, owner = [], []
        for index, sequence in enumerate(sequences):
            if not isinstance(sequence, str):
                raise InputError(None, f"sequence {index}", f"is a {type(sequence).__name__}, not a string",
                                 "pass DNA sequences as str")
            made = allele_tiles(sequence.upper(), 0, "+", tile_spans(0, len(sequence), tile_bp, tile_context_bp))
            tiles.extend(made)
            owner.extend([index] * len(made))
        windows = cut_tile_windows(self.tokenizer, tiles, rc == "average", window_tokens, window_overlap)
        stats = self.run_windows(windows, batch_tokens, sum(len(s) for s in sequences), progress)
        sequence_of_window = np.asarray(owner, dtype=np.int64)[windows.tile]
        n = len(sequences)
        forward = stats.group(np.where(windows.reverse_complement, -1, sequence_of_window), n)
        reverse = stats.group(np.where(windows.reverse_complement, sequence_of_window, -1), n) \
            if rc == "average" else None
        return StrandStats(forward, reverse)

    def embed(
        self,
        sequences: Sequence[str],
        pooling: Pooling = "mean",
        rc: RcMode = "average",
        window_tokens: int = 512,
        window_overlap: int = 64,
        batch_tokens: int = 16384,
        tile_bp: int | None = None,
        tile_context_bp: int = 0,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """[N, H] float32, one row per input sequence in input order (see `embed_strands`): the `pooling` of its
        counted tokens per strand, averaged over strands for rc="average". `progress(tokens_done, tokens_total)` is
        called after each batch; without it a tqdm bar shows when stderr is a terminal. Sets `last_stats`."""
        return self.embed_strands(sequences, rc, window_tokens, window_overlap, batch_tokens, tile_bp,
                                  tile_context_bp, progress).vectors(pooling).astype(np.float32)

    def __repr__(self) -> str:
        return (f"Encoder({self.model_id!r}, hidden_size={self.hidden_size}, device={self.device}, "
                f"dtype={self.dtype}, tokenizer_version={self.tokenizer_version[:12]})")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 beats fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" → CUDA when present, else CPU; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" → bf16 on CUDA that supports it and on CPUs with native bf16, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)} (got {dtype!r})")
    return _DTYPES[dtype]


def resolve_checkpoint(model: str | os.PathLike, revision: str | None = None) -> tuple[Path, str]:
    """(folder, model_id): a local folder as given, or a hub id looked up in the local Hugging Face cache only."""
    path = Path(model)
    if path.is_dir():
        return path, path.resolve().name
    try:
        folder = snapshot_download(repo_id=str(model), revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError) as err:
        raise InputError(model, None, "not a checkpoint folder, and not a model in the local Hugging Face cache",
                         "point at the checkpoint folder, or download it once on a machine with internet "
                         f"(hf download {model}) and copy it here") from err
    return Path(folder), str(model)


def load_encoder(
    model: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    revision: str | None = None,
    compile: bool = False,
) -> Encoder:
    """Load a DNABERT-2 checkpoint folder in the real layout, or a hub id already in the local cache (offline).

    Weights come from model.safetensors or pytorch_model.bin (`weights_only=True`), with or without the `bert.`
    prefix; the masked-LM head (`cls.*`) is ignored. A missing, unexpected or misshapen weight, or a config field
    this implementation cannot honour, stops with an InputError naming it. `compile=True` runs the layers through
    torch.compile (see `DnaBert2Model.compile_layers`): a minute or so of compilation first, then faster; for long
    jobs.
    """
    folder, model_id = resolve_checkpoint(model, revision)
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    if tokenizer.vocab_size > config.vocab_size:
        raise InputError(tokenizer.path, None,
                         f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}",
                         "use the tokenizer.json that belongs to this checkpoint")
    file = weights_file(folder)
    weights = read_weights(file)
    # Built on the meta device so no time goes into random initialisation that the checkpoint overwrites.
    with torch.device("meta"):
        network = DnaBert2Model(config)
    check_weights(network, weights, file)
    network.load_state_dict(weights, assign=True)
    target_device = resolve_device(device)
    network = network.to(device=target_device, dtype=resolve_dtype(dtype, target_device)).eval()
    network.requires_grad_(False)
    if compile:
        network.compile_layers()
    return Encoder(network, tokenizer, model_id=model_id, model_sha256=file_sha256(file))
