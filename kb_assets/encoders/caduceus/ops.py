"""The two sequence operations of a Mamba-1 mixer: the causal depthwise convolution and the selective scan.

On a CUDA device with `mamba_ssm` (and `causal_conv1d`) installed, their CUDA kernels run; everywhere else a
plain-PyTorch scan runs over the sequence in chunks, carrying the state from chunk to chunk, so memory is bounded
by the chunk and not by the sequence length (the upstream reference, `selective_scan_ref`, materialises
[batch, d_inner, length, d_state] at once: 4 GiB per 131 kb sequence at d_model 256). Written here because no
installable package provides a CPU selective scan: `mamba_ssm` builds only for CUDA, and `transformers`' Mamba
keeps the scan inside its model class.

Both compute, per channel d and state n (Gu & Dao 2023, Algorithm 2; delta_softplus as in Mamba):
    Δ_t = softplus(delta_t + delta_bias),  h_t = exp(Δ_t·A) ⊙ h_{t-1} + Δ_t·B_t·u_t,
    y_t = ⟨h_t, C_t⟩ + D·u_t,  out_t = y_t · silu(z_t)
with the state kept in float32 whatever the model's dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# Elements of one [chunk, batch, d_inner, d_state] float32 buffer: 256 Ki elements = 1 MiB, two such buffers live.
# Buffers that stay in the CPU's L2 cache make the scan twice as fast as 16 MiB ones (measured, d_inner 512).
SCAN_CHUNK_ELEMENTS = 1 << 18
# Longer chunks only add memory: the vectorised part per chunk is already large enough.
MAX_SCAN_CHUNK = 512
# exp(x) = 2^(x·log2 e): torch.exp2 runs 2.6× faster than torch.exp on a CPU (measured), to float32 rounding.
_LOG2_E = math.log2(math.e)


@functools.cache
def cuda_selective_scan() -> Callable | None:
    """mamba_ssm's CUDA `selective_scan_fn`, or None where mamba_ssm or its compiled extension is missing."""
    try:
        import selective_scan_cuda  # noqa: F401  (the compiled extension selective_scan_fn dispatches to)
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken build raising anything at import
        return None
    return selective_scan_fn


@functools.cache
def cuda_causal_conv1d() -> Callable | None:
    """causal_conv1d's CUDA `causal_conv1d_fn`, or None where it is not installed."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        return None
    return causal_conv1d_fn


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(depthwise causal conv1d): x [batch, length, channels], weight [channels, 1, width] → same shape as x.
    Output t sees inputs t-width+1 … t only, so right padding never reaches a real position."""
    width = weight.shape[-1]
    kernel = cuda_causal_conv1d() if x.is_cuda else None
    if kernel is not None:
        return kernel(x.transpose(1, 2), weight.squeeze(1), bias, activation="silu").transpose(1, 2)
    length = x.shape[1]
    convolved = F.conv1d(x.transpose(1, 2), weight, bias, padding=width - 1, groups=x.shape[2])[..., :length]
    return F.silu(convolved).transpose(1, 2)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """u, delta, z [batch, length, d_inner]; A [d_inner, d_state]; B, C [batch, length, d_state]; D, delta_bias
    [d_inner] → [batch, length, d_inner] in u's dtype. `chunk_tokens` overrides the chunk length of the PyTorch
    scan (tests use it; by default it follows SCAN_CHUNK_ELEMENTS)."""
    kernel = cuda_selective_scan() if u.is_cuda and chunk_tokens is None else None
    if kernel is not None:
        out = kernel(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.float(),
                     B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.float(),
                     z=z.transpose(1, 2).contiguous(), delta_bias=delta_bias.float(), delta_softplus=True)
        return out.transpose(1, 2)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, chunk_tokens)


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """The scan in plain PyTorch: per chunk, the decays exp(Δ·A) and inputs Δ·B·u are computed at once, then the
    recurrence runs step by step (one fused multiply-add over [batch, d_inner, d_state] per step) and the outputs
    ⟨h_t, C_t⟩ come from one product and sum."""
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    chunk = chunk_tokens or max(1, min(MAX_SCAN_CHUNK, SCAN_CHUNK_ELEMENTS // (batch * d_inner * d_state)))
    A_log2 = A.float() * _LOG2_E
    bias = delta_bias.float()
    state = torch.zeros(batch, d_inner, d_state, dtype=torch.float32, device=u.device)
    y = torch.empty(batch, length, d_inner, dtype=torch.float32, device=u.device)
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        step = F.softplus(delta[:, start:stop].float() + bias).transpose(0, 1)  # [T, batch, d_inner]
        decay = torch.exp2(step.unsqueeze(-1) * A_log2)  # exp(Δ·A) [T, batch, d_inner, d_state]
        drive = (step * u[:, start:stop].float().transpose(0, 1)).unsqueeze(-1) \
            * B[:, start:stop].float().transpose(0, 1).unsqueeze(2)  # [T, batch, d_inner, d_state]
        # drive[t] becomes h_t in place: its input value is read once, before it is overwritten.
        for t in range(stop - start):
            state = torch.addcmul(drive[t], decay[t], state, out=drive[t])
        # A product and a sum over d_state: twice as fast as a batched matmul with an inner size of 16 (measured).
        readout = C[:, start:stop].float().transpose(0, 1).unsqueeze(2)  # [T, batch, 1, d_state]
        y[:, start:stop] = (drive * readout).sum(-1).transpose(0, 1)
        del decay, drive
    y += u.float() * D.float()
    y *= F.silu(z.float())
    return y.to(u.dtype)
