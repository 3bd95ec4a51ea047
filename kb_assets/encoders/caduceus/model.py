"""Caduceus (Schiff et al. 2024) in plain PyTorch: bidirectional Mamba-1 (BiMamba) blocks, pre-norm residual
stream, and for the PS variant reverse-complement parameter sharing (RCPS).

How the PS model is computed here. Upstream's RCPS modules carry 2·d_model channels, [forward | RC], the RC half
stored reversed along length and channels, and apply every shared module to the forward half and to the flipped RC
half separately. Nothing mixes the halves, so the same numbers come from running one d_model network on a batch
that holds each sequence and its reverse complement (token ids reversed and complemented), which is what
`CaduceusModel` does. One upstream detail matters for trained weights: with `fused_add_norm` (the public
checkpoints' setting, trained with mamba_ssm's fused Triton norm) `RCPSMambaBlock` feeds the *second* half of the
residual stream to the forward norm and the flipped *first* half to the RC norm, i.e. before every block the two
strands' residual streams trade places and each is flipped along length and channels. `fused_add_norm=false` does
not do that. Both are honoured as the config says; the tests check each against a reference written from
upstream's channel-doubled formulation.

Output. Padded positions never influence real ones: the forward direction is causal and right padding sits after
the real tokens, and every reversal (the reverse Mamba, the RC strand, the fused flip) reverses each row within its
own length. `forward` returns [batch, length, d_model]:
- PH: the last hidden states.
- PS: per base the mean of the forward-strand state and the RC-strand state of the paired base,
  e_t = (F(x)_t + F(rc x)_{L-1-t}) / 2, which in upstream's channel-doubled output is
  (h[..., :d] + h[..., d:].flip(-1)) / 2. Reverse complementing the input reverses e along length exactly, so a
  mean over any strand-symmetric set of positions is RC-invariant; mean-pooled over a sequence it equals
  upstream's `CaduceusForSequenceClassification` pooling for rcps models (stack the forward half with the RC half
  flipped along length and channels, mean over length, average the two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kb_assets.encoders.caduceus.config import CaduceusConfig
from kb_assets.encoders.caduceus.ops import causal_conv1d_silu, selective_scan

FLOAT32_PARAMETERS = (".A_log", ".D", "dt_proj.bias")


class RowReversal:
    """Reverse each row of a right-padded [batch, length, …] tensor within its own length; padding stays put."""

    def __init__(self, lengths: torch.Tensor, length: int):
        self.identity_padding = bool((lengths == length).all())
        positions = torch.arange(length, device=lengths.device)
        inside = positions[None, :] < lengths[:, None]
        self.index = torch.where(inside, lengths[:, None] - 1 - positions[None, :], positions[None, :])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity_padding:
            return x.flip(1)
        index = self.index.view(*self.index.shape, *([1] * (x.dim() - 2))).expand_as(x)
        return torch.gather(x, 1, index)


class Mamba(nn.Module):
    """One direction of a BiMamba mixer (upstream mamba_ssm's `Mamba`, parameter names kept). With weight tying the
    reverse direction has no in_proj/out_proj of its own and uses the forward direction's."""

    def __init__(self, config: CaduceusConfig, projections: bool = True):
        super().__init__()
        d_inner, d_state = config.d_inner, config.d_state
        if projections:
            self.in_proj = nn.Linear(config.d_model, 2 * d_inner, bias=config.bias)
            self.out_proj = nn.Linear(d_inner, config.d_model, bias=config.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner, padding=config.d_conv - 1,
                                bias=config.conv_bias)
        self.x_proj = nn.Linear(d_inner, config.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(config.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.dt_rank, self.d_state = config.dt_rank, d_state

    def scan(self, xz: torch.Tensor, chunk_tokens: int | None) -> torch.Tensor:
        """in_proj output [batch, length, 2·d_inner] → gated scan output [batch, length, d_inner]."""
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # the bias is added inside the scan, in float32, before softplus
        A = -torch.exp(self.A_log.float())
        return selective_scan(x, delta, A, B, C, self.D, z, self.dt_proj.bias, chunk_tokens)


class CaduceusLayer(nn.Module):
    """Norm, then the bidirectional Mamba: forward Mamba plus the reverse Mamba run on the row-reversed input."""

    def __init__(self, config: CaduceusConfig):
        super().__init__()
        self.config = config
        self.norm = make_norm(config)
        self.mamba_fwd = Mamba(config)
        if config.bidirectional:
            self.mamba_rev = Mamba(config, projections=not config.bidirectional_weight_tie)

    def mix(self, hidden: torch.Tensor, reverse: RowReversal, chunk_tokens: int | None) -> torch.Tensor:
        forward, config = self.mamba_fwd, self.config
        xz = forward.in_proj(hidden)
        scanned = forward.scan(xz, chunk_tokens)
        if not config.bidirectional:
            return forward.out_proj(scanned)
        backward = self.mamba_rev
        if not config.bidirectional_weight_tie:
            out_reversed = backward.out_proj(backward.scan(backward.in_proj(reverse(hidden)), chunk_tokens))
            out = forward.out_proj(scanned)
            out_reversed = reverse(out_reversed)
            return out + out_reversed if config.bidirectional_strategy == "add" else out * out_reversed
        # Tied projections work token by token: projecting once and reversing equals reversing and projecting, and
        # for "add" one out_proj of the summed scans equals the sum of two (the bias then counts twice).
        scanned_reversed = reverse(backward.scan(reverse(xz), chunk_tokens))
        if config.bidirectional_strategy == "add":
            out = forward.out_proj(scanned + scanned_reversed)
            return out if forward.out_proj.bias is None else out + forward.out_proj.bias
        return forward.out_proj(scanned) * forward.out_proj(scanned_reversed)


def make_norm(config: CaduceusConfig) -> nn.Module:
    if config.rms_norm:
        return nn.RMSNorm(config.d_model, eps=config.norm_epsilon)
    return nn.LayerNorm(config.d_model, eps=config.norm_epsilon)


class CaduceusModel(nn.Module):
    """Token ids and attention mask in, [batch, length, d_model] out (see the module docstring for PS)."""

    def __init__(self, config: CaduceusConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(CaduceusLayer(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config)
        complement = config.complement_map or tuple(range(config.vocab_size))
        # Not persistent: it comes from config.json, and the model may be built on the meta device.
        self.register_buffer("complement", torch.tensor(complement, dtype=torch.long), persistent=False)
        self.hidden_size = config.d_model
        self.scan_chunk_tokens: int | None = None  # None: the scan picks its chunk from its memory budget

    def cast(self, dtype: torch.dtype) -> CaduceusModel:
        """Weights in `dtype`, except A_log, D and the dt bias, which stay float32 as upstream keeps them: they go
        through exp and softplus into the float32 scan, where bf16 rounding would shift every decay rate."""
        for name, parameter in self.named_parameters():
            if not name.endswith(FLOAT32_PARAMETERS):
                parameter.data = parameter.data.to(dtype)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, L] int; attention_mask [B, L] (1 = token, 0 = padding, padding after the tokens)."""
        batch, length = input_ids.shape
        if attention_mask is None:
            lengths = torch.full((batch,), length, dtype=torch.long, device=input_ids.device)
        else:
            lengths = attention_mask.sum(dim=1).long()
            positions = torch.arange(length, device=input_ids.device)
            if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
                # A scan has no mask: padding is harmless only after the tokens, where every reversal leaves it.
                raise ValueError("attention_mask must mark each row's tokens first and its padding after them "
                                 "(right padding)")
        if self.config.rcps:
            # The RC strand: each row reversed within its length and complemented (padding is its own complement).
            strand_reversal = RowReversal(lengths, length)
            rc_ids = self.complement[strand_reversal(input_ids)]
            input_ids, lengths = torch.cat([input_ids, rc_ids]), torch.cat([lengths, lengths])
        reverse = RowReversal(lengths, length)
        hidden = self.embedding(input_ids)
        residual: torch.Tensor | None = None
        swap_strands = self.config.rcps and self.config.fused_add_norm
        for layer in self.layers:
            stream = hidden if residual is None else hidden + residual
            if swap_strands:
                # Upstream's fused RCPS block: the strands' streams trade places, flipped along length and channels.
                stream = reverse(torch.cat(stream.chunk(2)[::-1])).flip(-1)
            residual = stream.float() if self.config.residual_in_fp32 else stream
            hidden = layer.mix(layer.norm(stream.to(layer.norm.weight.dtype)), reverse, self.scan_chunk_tokens)
        stream = hidden if residual is None else hidden + residual
        out = self.norm_f(stream.to(self.norm_f.weight.dtype))
        if self.config.rcps:
            forward_strand, rc_strand = out.chunk(2)
            out = (forward_strand + strand_reversal(rc_strand)) / 2
        return out
