"""DNABERT-2 (a MosaicBERT variant) in plain PyTorch: ALiBi attention, gated-GELU MLP, post-LayerNorm.

Module attribute names mirror the checkpoint's state-dict keys (`encoder.layer.N.attention.self.Wqkv` …), so the
real weights load with `load_state_dict` once the `bert.` prefix is stripped.

The layers run on packed tokens: the real tokens of every sequence of a batch, back to back, [T, H], with no padding
anywhere. Attention never sees a [batch, heads, L, L] bias. On CUDA it is one FlexAttention kernel over the whole
pack (ALiBi as a score_mod, a block-sparse mask that keeps each sequence to itself). Elsewhere the sequences of each
length are attended together with the CPU's fused attention kernel, under one [heads, L, L] ALiBi bias shared by every
sequence and layer (sequences of equal length need no padding mask).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionBackend = Literal["auto", "by_length", "flex"]
ATTENTION_BACKENDS: tuple[str, ...] = ("auto", "by_length", "flex")
# FlexAttention works on tiles of this many queries × keys; a pack is padded to a whole number of them.
FLEX_BLOCK = 128
# The BlockMask tensors whose tile dimensions change with the pack size.
_BLOCK_MASK_TENSORS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "q_num_blocks",
                       "q_indices", "full_q_num_blocks", "full_q_indices")
# Token id of the filler that pads a pack for FlexAttention ([PAD]); the filler is a sequence of its own.
_FILLER_TOKEN = 3


@dataclass(frozen=True)
class DnaBert2Config:
    """The architecture numbers from a checkpoint's config.json (117M defaults)."""

    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def flops_per_token(self, sequence_length: int) -> int:
        """Forward multiply-add FLOPs per token (2 per MAC): the linear layers plus QKᵀ and PV at this length."""
        hidden, intermediate = self.hidden_size, self.intermediate_size
        linear_macs = hidden * 3 * hidden + hidden * hidden + hidden * 2 * intermediate + intermediate * hidden
        attention_macs = 2 * sequence_length * hidden
        return 2 * self.num_hidden_layers * (linear_macs + attention_macs)


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi head slopes: 2^(-8i/n) for a power-of-two n; otherwise those of the next lower power of two,
    followed by every other slope of the next higher one (Press et al.; MosaicBERT's rule)."""

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    lower = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(lower)
    if lower < num_heads:
        slopes += geometric(2 * lower)[0::2][: num_heads - lower]
    return slopes


# One [heads, L, L] ALiBi bias per (slopes, device, dtype), grown to the longest sequence seen and sliced for shorter
# ones: 12.6 MB at 12 heads × 512², shared by every batch, sequence and layer.
_ALIBI_BIAS: dict[tuple[tuple[float, ...], str, torch.dtype], torch.Tensor] = {}


def alibi_bias(slopes: list[float], length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[heads, length, length]: −slope·|i − j|."""
    key = (tuple(slopes), str(device), dtype)
    cached = _ALIBI_BIAS.get(key)
    if cached is None or cached.shape[-1] < length:
        size = max(length, 512)
        positions = torch.arange(size, device=device)
        distance = (positions[None, :] - positions[:, None]).abs().to(torch.float32)
        cached = (-torch.tensor(slopes, device=device)[:, None, None] * distance).to(dtype)
        _ALIBI_BIAS[key] = cached
    return cached[:, :length, :length]


@torch.library.custom_op("kb_assets::alibi_attention_by_length", mutates_args=())
def alibi_attention_by_length(qkv: torch.Tensor, sequence_lengths: torch.Tensor, slopes: list[float]) -> torch.Tensor:
    """Packed ALiBi self-attention: qkv [T, 3·H] laid out [q | k | v], each head-major, for sequences of
    `sequence_lengths` (CPU int64 [B], summing to T) back to back → context [T, H].

    Each run of consecutive sequences of one length is viewed in place as [n, heads, L, head_dim] and attended with
    `scaled_dot_product_attention` under the shared ALiBi bias: no padding, no copy of q/k/v. Packs sorted by length
    make the fewest calls. A custom op, so that torch.compile keeps it whole and compiles the layers around it.
    """
    num_heads = len(slopes)
    tokens, width = qkv.shape
    hidden = width // 3
    head_dim = hidden // num_heads
    # fp32 bias on CPU even for bf16 (ALiBi distances reach hundreds, where bf16 rounds a bias by up to a unit, and
    # the CPU kernel takes an fp32 bias with bf16 queries); elsewhere the kernels want the queries' dtype.
    bias_dtype = torch.float32 if qkv.device.type == "cpu" else qkv.dtype
    context = qkv.new_empty(tokens, hidden)
    lengths, counts = torch.unique_consecutive(sequence_lengths, return_counts=True)
    bias = alibi_bias(slopes, int(lengths.max()), qkv.device, bias_dtype) if len(lengths) else None
    start = 0
    for length, count in zip(lengths.tolist(), counts.tolist()):
        end = start + length * count
        query, key, value = qkv[start:end].view(count, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        # A 4-d [1, heads, L, L] bias: the CPU kernel broadcasts it over the batch as it is (a 3-d one runs 3× slower).
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias[None, :, :length, :length])
        context[start:end].view(count, length, num_heads, head_dim).copy_(attended.transpose(1, 2))
        start = end
    return context


@alibi_attention_by_length.register_fake
def _(qkv: torch.Tensor, sequence_lengths: torch.Tensor, slopes: list[float]) -> torch.Tensor:
    return qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3)


class FlexPackAttention:
    """ALiBi self-attention over a whole pack with FlexAttention: ALiBi is a score_mod (−slope·|q − k|, which within
    a sequence is the distance of the two positions) and a block-sparse mask keeps each sequence to itself, so only
    the tiles on a sequence's own diagonal are computed.

    The mask reads sequence ids from a buffer that every pack overwrites in place, and both functions are made once,
    so the compiled kernel is reused for every pack (a new function or buffer object would recompile it).
    """

    def __init__(self, slopes: list[float], device: torch.device):
        self.slopes = torch.tensor(slopes, dtype=torch.float32, device=device)
        self.device = device
        self.sequence_ids = torch.zeros(0, dtype=torch.int32, device=device)
        self.score_mod, self.mask_mod = self._functions()
        self._flex: Callable[..., torch.Tensor] | None = None

    def _functions(self) -> tuple[Callable, Callable]:
        slopes, sequence_ids = self.slopes, self.sequence_ids

        def alibi(score, batch, head, query_index, key_index):
            return score - slopes[head] * (query_index - key_index).abs()

        def same_sequence(batch, head, query_index, key_index):
            return sequence_ids[query_index] == sequence_ids[key_index]

        return alibi, same_sequence

    def block_mask(self, sequence_lengths: torch.Tensor):
        """The BlockMask of a pack whose lengths (CPU int64) sum to a multiple of FLEX_BLOCK; also writes the pack's
        sequence ids where the mask function reads them."""
        from torch.nn.attention.flex_attention import BlockMask

        tokens = int(sequence_lengths.sum())
        if self.sequence_ids.numel() < tokens:
            # Room for twice the pack, so that packs up to that size reuse the compiled kernel; an odd size, so that
            # the compiler never takes it for the pack's own size.
            self.sequence_ids = torch.zeros(2 * max(tokens, self.sequence_ids.numel()) + 1, dtype=torch.int32,
                                            device=self.device)
            self.score_mod, self.mask_mod = self._functions()
        ids = torch.repeat_interleave(torch.arange(len(sequence_lengths), dtype=torch.int32), sequence_lengths)
        self.sequence_ids[:tokens].copy_(ids)
        blocks = (tensor.to(self.device) for tensor in document_blocks(sequence_lengths, FLEX_BLOCK))
        return BlockMask.from_kv_blocks(*blocks, BLOCK_SIZE=FLEX_BLOCK, mask_mod=self.mask_mod,
                                        seq_lengths=(tokens, tokens))

    def __call__(self, qkv: torch.Tensor, block_mask, num_heads: int) -> torch.Tensor:
        """qkv [T, 3·H] → context [T, H] (T a multiple of FLEX_BLOCK, the pack `block_mask` was made for)."""
        from torch.nn.attention.flex_attention import flex_attention

        tokens, width = qkv.shape
        hidden = width // 3
        query, key, value = qkv.view(tokens, 3, num_heads, hidden // num_heads).permute(1, 2, 0, 3).unsqueeze(1)
        flex = flex_attention
        if qkv.device.type == "cuda" and not torch.compiler.is_compiling():
            # Run eagerly, FlexAttention is dense reference math over all T² pairs: compile it on its own. (On CPU
            # that math is what eager runs: a reference; compile_layers gives the block-sparse CPU kernel.)
            if self._flex is None:
                self._flex = torch.compile(flex_attention, dynamic=True)
            flex = self._flex
        attended = flex(query, key, value, score_mod=self.score_mod, block_mask=block_mask)
        return attended.squeeze(0).transpose(0, 1).reshape(tokens, hidden)


def document_blocks(sequence_lengths: torch.Tensor, block: int) -> tuple[torch.Tensor, ...]:
    """Block sparsity of attention restricted to each sequence of a pack: (kv_num_blocks, kv_indices,
    full_kv_num_blocks, full_kv_indices) in BlockMask.from_kv_blocks' layout, [1, 1, n] and [1, 1, n, n] int32 for
    n = T / block query and key tiles. A tile is full where its queries and keys all lie in one sequence (no mask
    needed), partial where it straddles a boundary. Built from the lengths directly; `create_block_mask` would
    evaluate the mask on all T² pairs."""
    lengths = sequence_lengths.to(torch.int64)
    ends = torch.cumsum(lengths, 0)
    starts = ends - lengths
    tokens = int(ends[-1])
    n = tokens // block
    sequence_of_token = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    tile_starts = torch.arange(n) * block
    first, last = sequence_of_token[tile_starts], sequence_of_token[tile_starts + block - 1]
    # Keys a query tile can see: from the start of its first sequence to the end of its last.
    low, high = starts[first] // block, (ends[last] - 1) // block
    # Within one sequence, the key tiles that lie wholly inside it are full.
    single = first == last
    full_low = (starts[first] + block - 1) // block
    full_high = ends[first] // block - 1
    width = int((high - low).max()) + 1
    columns = low[:, None] + torch.arange(width)[None, :]
    seen = columns <= high[:, None]
    full = seen & single[:, None] & (columns >= full_low[:, None]) & (columns <= full_high[:, None])
    partial = seen & ~full

    def ordered(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The selected columns of each row first (in order), then the rest as filler, padded to all n key tiles.
        order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)
        indices = torch.zeros(n, n, dtype=torch.int32)
        indices[:, :width] = torch.gather(columns, 1, order).clamp(max=n - 1).to(torch.int32)
        return selected.sum(1).to(torch.int32)[None, None], indices[None, None]

    return (*ordered(partial), *ordered(full))


class DnaBert2Embeddings(nn.Module):
    """Word embedding plus the token-type-0 embedding, then LayerNorm; ALiBi replaces position embeddings."""

    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class DnaBert2SelfAttention(nn.Module):
    """The fused query/key/value projection; its output is laid out [q | k | v], each head-major."""

    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)


class DnaBert2AttentionOutput(nn.Module):
    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class DnaBert2Attention(nn.Module):
    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.self = DnaBert2SelfAttention(config)
        self.output = DnaBert2AttentionOutput(config)


class DnaBert2GatedMlp(nn.Module):
    """One bias-free projection to [GELU input | gate], then the output projection."""

    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class DnaBert2Layer(nn.Module):
    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.attention = DnaBert2Attention(config)
        self.mlp = DnaBert2GatedMlp(config)

    def forward(self, hidden: torch.Tensor, attend: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """hidden [T, H] packed tokens; `attend` maps their qkv [T, 3·H] to the attention context [T, H]."""
        context = attend(self.attention.self.Wqkv(hidden))
        output = self.attention.output
        hidden = output.LayerNorm(output.dense(context) + hidden)
        mlp = self.mlp
        gelu_input, gate = mlp.gated_layers(hidden).split(self.intermediate_size, dim=-1)
        return mlp.layernorm(mlp.wo(F.gelu(gelu_input) * gate) + hidden)


class DnaBert2Encoder(nn.Module):
    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.layer = nn.ModuleList(DnaBert2Layer(config) for _ in range(config.num_hidden_layers))


class DnaBert2Model(nn.Module):
    """The DNABERT-2 encoder: token ids in, last hidden states out.

    `forward` takes a right-padded batch [B, L]; `forward_packed` takes the sequences back to back [T] with their
    lengths, which is what the layers run on either way (no compute on padding).
    `attention_backend`: "flex" (FlexAttention, compiled; the default on CUDA), "by_length" (fused attention per run
    of equal-length sequences; the default elsewhere) or "auto".
    """

    def __init__(self, config: DnaBert2Config, attention_backend: AttentionBackend = "auto"):
        super().__init__()
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS} (got {attention_backend!r})")
        self.config = config
        self.embeddings = DnaBert2Embeddings(config)
        self.encoder = DnaBert2Encoder(config)
        # A plain list rather than a buffer: the model can be built on the meta device and filled by
        # load_state_dict(assign=True) without this having to be recreated.
        self.alibi_slopes = alibi_slopes(config.num_attention_heads)
        self.attention_backend: AttentionBackend = attention_backend
        self._flex: FlexPackAttention | None = None
        self._layers: Callable[..., torch.Tensor] = self.run_layers
        self.compiled = False

    def uses_flex(self, device: torch.device) -> bool:
        return self.attention_backend == "flex" or (self.attention_backend == "auto" and device.type == "cuda")

    def run_layers(self, hidden: torch.Tensor, sequence_lengths: torch.Tensor, block_mask=None) -> torch.Tensor:
        """The encoder layers over packed hidden states [T, H] → [T, H]. With a BlockMask (FlexPackAttention), attention
        is FlexAttention over the pack; without, per run of equal `sequence_lengths` (CPU int64 [B])."""
        if block_mask is not None:
            flex, heads = self._flex, self.config.num_attention_heads

            def attend(qkv: torch.Tensor) -> torch.Tensor:
                return flex(qkv, block_mask, heads)
        else:
            slopes = self.alibi_slopes

            def attend(qkv: torch.Tensor) -> torch.Tensor:
                return alibi_attention_by_length(qkv, sequence_lengths, slopes)

        for layer in self.encoder.layer:
            hidden = layer(hidden, attend)
        return hidden

    def forward_packed(self, input_ids: torch.Tensor, sequence_lengths: torch.Tensor) -> torch.Tensor:
        """input_ids [T] int: the tokens of B sequences back to back; sequence_lengths [B] int (any device), each
        ≥ 1, summing to T → last hidden states [T, H], each sequence attending only to itself.

        Sequences of equal length next to each other run fastest on CPU (one attention call per run), so sort a
        pack by length. Results do not depend on how sequences are grouped into packs.
        """
        lengths = sequence_lengths.to("cpu", torch.int64)
        tokens = input_ids.shape[0]
        if input_ids.dim() != 1 or lengths.dim() != 1 or int(lengths.sum()) != tokens or bool((lengths < 1).any()):
            raise ValueError(f"forward_packed needs input_ids [T] and sequence_lengths [B] of positive lengths that "
                             f"sum to T (got input_ids {tuple(input_ids.shape)}, lengths summing to "
                             f"{int(lengths.sum())}, shortest {int(lengths.min()) if len(lengths) else None})")
        if self.uses_flex(input_ids.device):
            try:
                return self._forward_flex(input_ids, lengths)
            except Exception as err:  # FlexAttention needs inductor and Triton for the device; by-length does not
                warnings.warn(f"FlexAttention failed, using per-length attention from now on: {err}", stacklevel=2)
                self.attention_backend = "by_length"
        return self._layers(self.embeddings(input_ids), lengths, None)

    def _forward_flex(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # The pack is padded to whole tiles with a filler sequence of its own, cut off again at the end.
        tokens = input_ids.shape[0]
        filler = -tokens % FLEX_BLOCK
        if filler:
            input_ids = F.pad(input_ids, (0, filler), value=_FILLER_TOKEN)
            lengths = torch.cat([lengths, torch.tensor([filler])])
        if self._flex is None or self._flex.device != input_ids.device:
            self._flex = FlexPackAttention(self.alibi_slopes, input_ids.device)
        block_mask = self._flex.block_mask(lengths)
        return self._layers(self.embeddings(input_ids), lengths, block_mask)[:tokens]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, L] int; attention_mask [B, L], 1 for the first n_b tokens of row b and 0 after them (right
        padding) → hidden states [B, L, H], zeros at padding."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(dim=1)
        is_token = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] < lengths[:, None]
        if not torch.equal(attention_mask.bool(), is_token):
            raise ValueError("attention_mask must mark each row's tokens first and its padding after them "
                             "(right padding); pass sequences of other layouts to forward_packed")
        packed = self.forward_packed(input_ids[is_token], lengths)
        hidden = packed.new_zeros(*input_ids.shape, packed.shape[-1])
        hidden[is_token] = packed
        return hidden

    def compile_layers(self) -> None:
        """Run the layers through torch.compile (inductor): fused elementwise kernels and, on CPU with freezing,
        weights prepacked for oneDNN; attention stays one opaque step (a custom op, or FlexAttention's own kernel).
        The first call compiles (half a minute to a minute for the 117M model on two CPU cores), after which any
        pack runs without recompiling; worth it for long jobs. Falls back to eager, with a warning, where inductor
        cannot work (no C++ compiler, no Triton)."""
        compiled = torch.compile(self.run_layers, dynamic=True)

        def run_compiled_or_eager(hidden: torch.Tensor, sequence_lengths: torch.Tensor,
                                  block_mask=None) -> torch.Tensor:
            # Without these, a pack of one sequence or of one FlexAttention tile (size 1 is special to the compiler)
            # would compile a second time.
            torch._dynamo.decorators.mark_unbacked(sequence_lengths, 0)
            for name in _BLOCK_MASK_TENSORS if block_mask is not None else ():
                blocks = getattr(block_mask, name, None)
                if isinstance(blocks, torch.Tensor):
                    for dim in range(2, blocks.dim()):
                        torch._dynamo.decorators.mark_unbacked(blocks, dim)
            try:
                # Freezing (weights as constants, prepacked) is read when the first call compiles; patched per call
                # so the setting stays local to this model. CPU only: it would fold FlexAttention's buffers too.
                with torch._inductor.config.patch(freezing=hidden.device.type == "cpu"):
                    return compiled(hidden, sequence_lengths, block_mask)
            except Exception as err:  # inductor fails in many ways (toolchain, Triton, unsupported op)
                warnings.warn(f"torch.compile failed, running the DNABERT-2 layers eagerly: {err}", stacklevel=2)
                self._layers, self.compiled = self.run_layers, False
                return self.run_layers(hidden, sequence_lengths, block_mask)

        self._layers, self.compiled = run_compiled_or_eager, True
