"""DNABERT-2 (a MosaicBERT variant) in plain PyTorch: ALiBi attention, gated-GELU MLP, post-LayerNorm.

Module attribute names mirror the checkpoint's state-dict keys (`encoder.layer.N.attention.self.Wqkv` …), so the
real weights load with `load_state_dict` once the `bert.` prefix is stripped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Added to attention scores of padded keys, as the upstream model does; exp() of it is exactly 0 in fp32 and bf16.
MASK_BIAS = -10000.0


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


@dataclass(frozen=True)
class TokenLayout:
    """Where the real tokens of a padded [B, L] batch sit: the model keeps only those between attention steps,
    so the linear layers, which do nearly all the work, never compute padding."""

    token_index: torch.Tensor  # [T] positions of real tokens in the flattened [B·L] batch
    batch: int
    length: int

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[T, D] → [B, L, D] with zeros at padding."""
        padded = packed.new_zeros(self.batch * self.length, packed.shape[-1])
        padded.index_copy_(0, self.token_index, packed)
        return padded.view(self.batch, self.length, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, L, D] → [T, D]."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.token_index)


class DnaBert2Layer(nn.Module):
    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.intermediate_size = config.intermediate_size
        self.attention = DnaBert2Attention(config)
        self.mlp = DnaBert2GatedMlp(config)

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """hidden [T, H] real tokens only; attention_bias [B, heads, L, L] (ALiBi + padding), added to the scaled
        scores of the padded batch that attention runs on."""
        width = hidden.shape[-1]
        qkv = layout.pad(self.attention.self.Wqkv(hidden))
        qkv = qkv.view(layout.batch, layout.length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, L, head_dim]
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_bias)
        context = layout.unpad(context.transpose(1, 2))
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
    """The DNABERT-2 encoder: token ids and attention mask in, last hidden states out (zeros at padding)."""

    def __init__(self, config: DnaBert2Config):
        super().__init__()
        self.config = config
        self.embeddings = DnaBert2Embeddings(config)
        self.encoder = DnaBert2Encoder(config)
        # A plain list rather than a buffer: the model can be built on the meta device and filled by
        # load_state_dict(assign=True) without this having to be recreated.
        self.alibi_slopes = alibi_slopes(config.num_attention_heads)
        self._layers: Callable[..., torch.Tensor] = self.run_layers
        self.compiled = False

    def attention_bias(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, heads, L, L]: −slope·|i − j| plus MASK_BIAS on padded keys.

        fp32 on CPU even for a bf16 model (ALiBi distances reach hundreds, where bf16 rounds the bias by up to a
        unit, and the CPU attention kernel takes an fp32 bias with bf16 queries); elsewhere the model's dtype,
        which the fused GPU attention kernels require.
        """
        length = attention_mask.shape[1]
        positions = torch.arange(length, device=attention_mask.device)
        distance = (positions[None, :] - positions[:, None]).abs().float()  # [L, L]
        slopes = torch.tensor(self.alibi_slopes, device=attention_mask.device)
        alibi = -slopes[:, None, None] * distance  # [heads, L, L]
        padding = (1.0 - attention_mask.float()) * MASK_BIAS  # [B, L], over keys
        bias = alibi[None] + padding[:, None, None, :]
        return bias if attention_mask.device.type == "cpu" else bias.to(self.embeddings.word_embeddings.weight.dtype)

    def run_layers(self, hidden: torch.Tensor, attention_bias: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
        """The encoder layers over the real tokens [T, H] of a [B, L] batch → padded hidden states [B, L, H]."""
        layout = TokenLayout(token_index, attention_bias.shape[0], attention_bias.shape[-1])
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_bias, layout)
        return layout.pad(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, L] int; attention_mask [B, L] (1 = token, 0 = padding) → hidden states [B, L, H]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Real-token positions have a data-dependent count, so they are found here, outside the compiled layers.
        token_index = attention_mask.flatten().nonzero().squeeze(1)
        bias = self.attention_bias(attention_mask)
        hidden = self.embeddings(input_ids.flatten().index_select(0, token_index))
        return self._layers(hidden, bias, token_index)

    def compile_layers(self) -> None:
        """Run the layers through torch.compile (inductor): fused elementwise kernels and, with freezing, weights
        prepacked for oneDNN. The first call compiles (half a minute to a minute for the 117M model on two CPU cores),
        after which any batch shape runs without recompiling; worth it for long jobs. Falls back to eager, with a
        warning, where inductor cannot work (no C++ compiler, no Triton)."""
        compiled = torch.compile(self.run_layers, dynamic=True)

        def run_compiled_or_eager(hidden: torch.Tensor, attention_bias: torch.Tensor,
                                  token_index: torch.Tensor) -> torch.Tensor:
            # Without this, a batch of one window (size 1 is special to the compiler) would compile a second time.
            torch._dynamo.decorators.mark_unbacked(attention_bias, 0)
            try:
                # Freezing (weights as constants, prepacked) is read when the first call compiles; patched per call
                # so the setting stays local to this model.
                with torch._inductor.config.patch(freezing=True):
                    return compiled(hidden, attention_bias, token_index)
            except Exception as err:  # inductor fails in many ways (toolchain, Triton, unsupported op)
                warnings.warn(f"torch.compile failed, running the DNABERT-2 layers eagerly: {err}", stacklevel=2)
                self._layers, self.compiled = self.run_layers, False
                return self.run_layers(hidden, attention_bias, token_index)

        self._layers, self.compiled = run_compiled_or_eager, True
