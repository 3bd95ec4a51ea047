"""Packed ALiBi attention without a materialized bias: the per-length CPU path against a float64 loop over each
sequence, the FlexAttention block mask against torch's own `create_block_mask`, both backends through the whole model,
and what forward/forward_packed accept."""

import math

import pytest
import torch
from torch.nn.attention.flex_attention import _ordered_to_dense, create_block_mask
from torch.utils._python_dispatch import TorchDispatchMode

from kb_assets.encoders.checkpoint import random_state_dict
from kb_assets.encoders.model import (
    FLEX_BLOCK,
    DnaBert2Config,
    DnaBert2Model,
    FlexPackAttention,
    alibi_attention_by_length,
    alibi_slopes,
    document_blocks,
)

SMALL = DnaBert2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=96)


def reference_attention(qkv: torch.Tensor, lengths: list[int], slopes: list[float]) -> torch.Tensor:
    """float64, one sequence and head at a time, explicit ALiBi distances."""
    heads = len(slopes)
    hidden = qkv.shape[1] // 3
    head_dim = hidden // heads
    q, k, v = qkv.double().split(hidden, dim=1)
    context = torch.zeros(qkv.shape[0], hidden, dtype=torch.float64)
    start = 0
    for n in lengths:
        rows = slice(start, start + n)
        positions = torch.arange(n, dtype=torch.float64)
        distance = (positions[:, None] - positions[None, :]).abs()
        for head in range(heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            scores = q[rows, cols] @ k[rows, cols].T / math.sqrt(head_dim) - slopes[head] * distance
            context[rows, cols] = torch.softmax(scores, dim=-1) @ v[rows, cols]
        start += n
    return context


def small_model(backend: str = "auto", seed: int = 5) -> DnaBert2Model:
    state = random_state_dict(SMALL.vocab_size, SMALL.hidden_size, SMALL.num_hidden_layers, SMALL.intermediate_size,
                              seed=seed)
    with torch.device("meta"):
        model = DnaBert2Model(SMALL, attention_backend=backend)
    model.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")},
                          assign=True)
    return model.eval()


def random_pack(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(5, SMALL.vocab_size, (sum(lengths),), generator=generator),
            torch.tensor(lengths))


@pytest.mark.parametrize("lengths", [[5, 5, 5], [1, 37, 37, 2, 2, 2, 9, 1, 37], [64]])
def test_attention_by_length_matches_a_float64_loop(lengths: list[int]):
    slopes = alibi_slopes(4)
    qkv = torch.randn(sum(lengths), 3 * 32, generator=torch.Generator().manual_seed(len(lengths)))
    context = alibi_attention_by_length(qkv, torch.tensor(lengths), slopes)
    torch.testing.assert_close(context.double(), reference_attention(qkv, lengths, slopes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lengths", [
    [3, 200, 1, 1, 130, 127, 50, 2, 246, 8],  # sequences straddling tiles, several in one tile, 768 tokens
    [128, 256, 128],  # boundaries on tile edges: only full tiles
    [1] * 128,  # a tile of one-token sequences
    [384],
])
def test_document_blocks_match_create_block_mask(lengths: list[int]):
    assert sum(lengths) % FLEX_BLOCK == 0
    flex = FlexPackAttention([0.5], torch.device("cpu"))
    mask = flex.block_mask(torch.tensor(lengths))
    reference = create_block_mask(flex.mask_mod, None, None, sum(lengths), sum(lengths), device="cpu")
    tiles = sum(lengths) // FLEX_BLOCK

    def dense(num_blocks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return _ordered_to_dense(num_blocks, indices, tiles)

    assert torch.equal(dense(mask.kv_num_blocks, mask.kv_indices),
                       dense(reference.kv_num_blocks, reference.kv_indices))
    assert torch.equal(dense(mask.full_kv_num_blocks, mask.full_kv_indices),
                       dense(reference.full_kv_num_blocks, reference.full_kv_indices))
    num_blocks, _, full_num_blocks, _ = document_blocks(torch.tensor(lengths), FLEX_BLOCK)
    assert torch.equal(num_blocks, mask.kv_num_blocks) and torch.equal(full_num_blocks, mask.full_kv_num_blocks)


# Eager FlexAttention on CPU is dense reference math over the pack under the same score_mod and mask_mod: what this
# test wants, and what torch warns about.
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")
def test_flex_backend_matches_attention_by_length():
    lengths = [3, 200, 1, 1, 130, 40, 50, 2, 8]
    ids, sequence_lengths = random_pack(lengths, seed=1)
    with torch.inference_mode():
        by_length = small_model("by_length").forward_packed(ids, sequence_lengths)
        flex = small_model("flex").forward_packed(ids, sequence_lengths)
    assert flex.shape == by_length.shape == (sum(lengths), SMALL.hidden_size)
    torch.testing.assert_close(flex, by_length, atol=2e-5, rtol=0)


@pytest.mark.parametrize("backend", ["by_length", "flex"])
def test_a_sequence_sees_only_itself_whatever_it_is_packed_with(backend: str):
    model = small_model(backend)
    lengths = [17, 4, 17, 90, 1]
    ids, sequence_lengths = random_pack(lengths, seed=2)
    with torch.inference_mode():
        packed = model.forward_packed(ids, sequence_lengths)
        start = 0
        for n in lengths:
            alone = model.forward_packed(ids[start:start + n], torch.tensor([n]))
            torch.testing.assert_close(packed[start:start + n], alone, atol=2e-5, rtol=0)
            start += n


def test_forward_is_forward_packed_of_the_unpadded_rows():
    model = small_model()
    lengths = [6, 30, 30, 11]
    ids, sequence_lengths = random_pack(lengths, seed=3)
    padded = torch.full((4, 30), 3)
    mask = torch.zeros(4, 30, dtype=torch.long)
    for row, chunk in enumerate(ids.split(lengths)):
        padded[row, : len(chunk)] = chunk
        mask[row, : len(chunk)] = 1
    with torch.inference_mode():
        hidden = model(padded, mask)
        packed = model.forward_packed(ids, sequence_lengths)
    torch.testing.assert_close(hidden[mask.bool()], packed, atol=1e-6, rtol=0)
    assert torch.all(hidden[~mask.bool()] == 0)


def test_bad_layouts_are_refused():
    model = small_model()
    ids, lengths = random_pack([4, 3], seed=4)
    with pytest.raises(ValueError, match="right padding"):
        model(ids.view(1, 7), torch.tensor([[1, 1, 0, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="sum to T"):
        model.forward_packed(ids, torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="positive lengths"):
        model.forward_packed(ids, torch.tensor([7, 0]))
    with pytest.raises(ValueError, match="attention_backend"):
        DnaBert2Model(SMALL, attention_backend="triton")


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any operation returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_no_tensor_grows_with_batch_times_length_squared():
    # 128 sequences of 64 tokens: a [batch, heads, L, L] bias would hold 2.1M elements; the biggest honest tensors
    # are the [T, 3·H] projections (1.6M) and the shared ALiBi bias ([heads, 512, 512], 1M).
    model = small_model()
    batch, length = 128, 64
    ids = torch.randint(5, SMALL.vocab_size, (batch, length), generator=torch.Generator().manual_seed(6))
    recorder = LargestTensor()
    with torch.inference_mode(), recorder:
        model(ids, torch.ones_like(ids))
    assert recorder.largest < batch * SMALL.num_attention_heads * length * length


def test_a_failing_flex_attention_falls_back_to_attention_by_length(monkeypatch: pytest.MonkeyPatch):
    def broken(self, qkv, block_mask, num_heads):
        raise RuntimeError("no Triton")

    monkeypatch.setattr(FlexPackAttention, "__call__", broken)
    model = small_model("flex")
    ids, lengths = random_pack([9, 30, 2], seed=7)
    with torch.inference_mode():
        with pytest.warns(UserWarning, match="FlexAttention failed, using per-length attention from now on: no Tr"):
            hidden = model.forward_packed(ids, lengths)
        expected = small_model("by_length").forward_packed(ids, lengths)
    assert model.attention_backend == "by_length"
    torch.testing.assert_close(hidden, expected, atol=0, rtol=0)


@pytest.mark.slow
def test_compiled_flex_layers_trace_once_for_every_pack_size(monkeypatch: pytest.MonkeyPatch):
    # What CUDA compiles with inductor, traced here with aot_eager (dynamo's graph capture, no code generation):
    # one graph, no break, whatever the pack size or tile count, so a run compiles once.
    from torch._dynamo.utils import counters

    compile_function = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **options: compile_function(
        function, dynamic=True, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    model = small_model("flex")
    model.compile_layers()
    reference = small_model("by_length")
    for lengths in ([5, 5, 30, 2], [64, 64, 1, 3, 300], [7], [513, 2]):
        ids, sequence_lengths = random_pack(lengths, seed=len(lengths))
        with torch.inference_mode():
            torch.testing.assert_close(model.forward_packed(ids, sequence_lengths),
                                       reference.forward_packed(ids, sequence_lengths), atol=2e-5, rtol=0)
    assert model.compiled and model.attention_backend == "flex"
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
