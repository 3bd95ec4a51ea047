"""The native model against a deliberately plain reference forward written from the model facts alone:
one sequence at a time, float64, explicit ALiBi distances and a loop over heads and query positions."""

import math
import os
from pathlib import Path

import pytest
import torch

from kb_assets.encoders import DnaBert2Config, DnaBert2Model
from kb_assets.encoders.checkpoint import random_state_dict
from kb_assets.encoders.model import alibi_slopes

# Slopes as documented for the real checkpoint (12 heads) and the power-of-two rule for 4 heads.
REFERENCE_SLOPES = {
    4: [2**-2, 2**-4, 2**-6, 2**-8],
    12: [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8, 2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5],
}


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def reference_forward(state: dict[str, torch.Tensor], token_ids: list[int], num_heads: int) -> torch.Tensor:
    """Last hidden states [n, H] of one unpadded sequence, from checkpoint-named weights (`bert.` prefix)."""
    w = {key.removeprefix("bert."): value.double() for key, value in state.items()}
    n_layers = 1 + max(int(key.split(".")[2]) for key in w if key.startswith("encoder.layer."))
    hidden_size = w["embeddings.word_embeddings.weight"].shape[1]
    head_dim = hidden_size // num_heads
    intermediate = w["encoder.layer.0.mlp.wo.weight"].shape[1]
    slopes = REFERENCE_SLOPES[num_heads]
    n = len(token_ids)

    x = w["embeddings.word_embeddings.weight"][token_ids] + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for index in range(n_layers):
        p = f"encoder.layer.{index}."
        qkv = x @ w[p + "attention.self.Wqkv.weight"].T + w[p + "attention.self.Wqkv.bias"]
        q, k, v = qkv[:, :hidden_size], qkv[:, hidden_size : 2 * hidden_size], qkv[:, 2 * hidden_size :]
        context = torch.zeros(n, hidden_size, dtype=torch.float64)
        for head in range(num_heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            for i in range(n):
                alibi = torch.tensor([-slopes[head] * abs(i - j) for j in range(n)], dtype=torch.float64)
                scores = k[:, cols] @ q[i, cols] / math.sqrt(head_dim) + alibi
                probabilities = torch.exp(scores - scores.max())
                probabilities = probabilities / probabilities.sum()
                context[i, cols] = probabilities @ v[:, cols]
        attended = context @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        norm = p + "attention.output.LayerNorm."
        x = layer_norm(attended + x, w[norm + "weight"], w[norm + "bias"])
        gated = x @ w[p + "mlp.gated_layers.weight"].T
        mlp = (gelu_exact(gated[:, :intermediate]) * gated[:, intermediate:]) @ w[p + "mlp.wo.weight"].T
        x = layer_norm(mlp + w[p + "mlp.wo.bias"] + x, w[p + "mlp.layernorm.weight"], w[p + "mlp.layernorm.bias"])
    return x


def model_from_state(config: DnaBert2Config, state: dict[str, torch.Tensor]) -> DnaBert2Model:
    with torch.device("meta"):  # no time spent on a random init that is overwritten
        model = DnaBert2Model(config)
    weights = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")}
    model.load_state_dict(weights, assign=True)
    return model.eval()


def padded_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(map(len, sequences))
    ids = torch.full((len(sequences), longest), 3, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask


def assert_parity(config: DnaBert2Config, sequences: list[list[int]], seed: int) -> None:
    state = random_state_dict(config.vocab_size, config.hidden_size, config.num_hidden_layers,
                              config.intermediate_size, seed=seed)
    model = model_from_state(config, state)
    ids, mask = padded_batch(sequences)
    with torch.inference_mode():
        hidden = model(ids, mask)
    assert hidden.dtype == torch.float32 and hidden.shape == (*ids.shape, config.hidden_size)
    for row, sequence in enumerate(sequences):
        expected = reference_forward(state, sequence, config.num_attention_heads)
        torch.testing.assert_close(hidden[row, : len(sequence)].double(), expected, atol=1e-4, rtol=0)
        assert torch.all(hidden[row, len(sequence) :] == 0)  # padded positions come back as zeros


def random_sequences(lengths: list[int], vocab_size: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [[1, *torch.randint(5, vocab_size, (n - 2,), generator=generator).tolist(), 2] for n in lengths]


def test_alibi_slopes_follow_the_documented_rule():
    assert alibi_slopes(12) == pytest.approx(REFERENCE_SLOPES[12], rel=1e-12)
    assert alibi_slopes(4) == pytest.approx(REFERENCE_SLOPES[4], rel=1e-12)
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(i + 1) for i in range(8)], rel=1e-12)


def test_parity_with_reference_at_a_two_layer_shape_with_padding():
    config = DnaBert2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=96)
    assert_parity(config, random_sequences([40, 3, 17, 29], config.vocab_size, seed=1), seed=5)


@pytest.mark.slow
def test_parity_with_reference_at_the_full_117m_shape_with_padding():
    config = DnaBert2Config()  # 768 hidden, 12 layers, 12 heads, 3072 intermediate, vocab 4096
    assert_parity(config, random_sequences([14, 6, 10], config.vocab_size, seed=2), seed=0)


def test_flops_per_token_counts_linear_layers_and_attention():
    config = DnaBert2Config()
    linear_only = 2 * 12 * (768 * 2304 + 768 * 768 + 768 * 6144 + 3072 * 768)
    assert config.flops_per_token(0) == linear_only
    assert linear_only == pytest.approx(226.5e6, rel=1e-3)
    assert config.flops_per_token(512) - linear_only == 2 * 12 * 2 * 512 * 768


UPSTREAM_ENV = "KB_ASSETS_DNABERT2_UPSTREAM"


def test_parity_with_the_upstream_code_when_present():
    """The upstream MosaicBERT code of zhihan1996/DNABERT-2-117M (bert_layers.py, bert_padding.py,
    configuration_bert.py; never committed here), fp32, its plain PyTorch attention: set KB_ASSETS_DNABERT2_UPSTREAM
    to a folder holding them (transformers and einops importable). Elsewhere, CI included, this skips."""
    folder = os.environ.get(UPSTREAM_ENV)
    if not folder:
        pytest.skip(f"{UPSTREAM_ENV} is not set")
    pytest.importorskip("einops")
    pytest.importorskip("transformers")
    from kb_assets.benchmarks.encoder import load_upstream

    config = DnaBert2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=96)
    state = random_state_dict(config.vocab_size, config.hidden_size, config.num_hidden_layers,
                              config.intermediate_size, seed=8)
    upstream = load_upstream(Path(folder), state, config, torch.device("cpu"))
    model = model_from_state(config, state)
    ids, mask = padded_batch(random_sequences([40, 3, 17, 29], config.vocab_size, seed=9))
    with torch.inference_mode():
        expected = upstream(ids, attention_mask=mask)[0]
        hidden = model(ids, mask)
    torch.testing.assert_close(hidden, expected, atol=2e-6, rtol=0)
