"""The CUDA path (bf16, FlexAttention over packs) against the CPU fp32 path, and its determinism. Skipped without a
GPU; kb_assets/benchmarks/gpu_check.sh runs these on a GPU machine."""

import pytest
import torch

from kb_assets.encoders.checkpoint import random_state_dict
from kb_assets.encoders.model import DnaBert2Config, DnaBert2Model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SHAPE = DnaBert2Config()  # the 117M shape: 12 layers, 12 heads of 64
# Exon-mix-like: full 512-token windows, a run of equal lengths, one-token and odd lengths, 1,821 tokens in all.
LENGTHS = [512, 512, 300, 130, 130, 130, 64, 17, 9, 3, 1, 2, 11]


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    state = random_state_dict(SHAPE.vocab_size, SHAPE.hidden_size, SHAPE.num_hidden_layers,
                              SHAPE.intermediate_size, seed=11)
    return {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")}


def build(weights: dict[str, torch.Tensor], device: str, dtype: torch.dtype, backend: str = "auto") -> DnaBert2Model:
    with torch.device("meta"):
        model = DnaBert2Model(SHAPE, attention_backend=backend)
    model.load_state_dict(weights, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def pack() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(12)
    return torch.randint(5, SHAPE.vocab_size, (sum(LENGTHS),), generator=generator), torch.tensor(LENGTHS)


@pytest.fixture(scope="module")
def cpu_fp32(weights, pack) -> torch.Tensor:
    with torch.inference_mode():
        return build(weights, "cpu", torch.float32).forward_packed(*pack)


def assert_bf16_close(hidden: torch.Tensor, reference: torch.Tensor) -> None:
    """Token by token: relative error of the hidden state and cosine, at bf16's precision over 12 layers."""
    hidden, reference = hidden.float().cpu(), reference.float()
    error = (hidden - reference).norm(dim=1) / reference.norm(dim=1)
    cosine = torch.nn.functional.cosine_similarity(hidden, reference, dim=1)
    assert error.max() < 0.05 and error.mean() < 0.03, (error.max(), error.mean())  # CPU bf16: 0.018, 0.016
    assert cosine.min() > 0.998, cosine.min()
    # Mean-pooled per sequence, as the engine pools: closer still.
    pooled = torch.stack([chunk.mean(0) for chunk in hidden.split(LENGTHS)])
    pooled_reference = torch.stack([chunk.mean(0) for chunk in reference.split(LENGTHS)])
    assert torch.nn.functional.cosine_similarity(pooled, pooled_reference, dim=1).min() > 0.9995


@pytest.mark.parametrize("backend", ["auto", "by_length"])
def test_cuda_bf16_matches_cpu_fp32(weights, pack, cpu_fp32, backend: str):
    model = build(weights, "cuda", torch.bfloat16, backend)
    assert model.uses_flex(torch.device("cuda")) == (backend == "auto")
    with torch.inference_mode():
        hidden = model.forward_packed(pack[0].cuda(), pack[1])
    assert hidden.dtype == torch.bfloat16 and hidden.shape == (sum(LENGTHS), SHAPE.hidden_size)
    assert model.attention_backend == backend  # FlexAttention did not fall back
    assert_bf16_close(hidden, cpu_fp32)


def test_cuda_compiled_layers_match_cpu_fp32(weights, pack, cpu_fp32):
    model = build(weights, "cuda", torch.bfloat16)
    model.compile_layers()
    with torch.inference_mode():
        hidden = model.forward_packed(pack[0].cuda(), pack[1])
        # A pack of another size reuses the compiled layers.
        again = model.forward_packed(pack[0][:700].cuda(), torch.tensor([512, 130, 58]))
    assert model.compiled and model.attention_backend == "auto"
    assert_bf16_close(hidden, cpu_fp32)
    assert again.shape == (700, SHAPE.hidden_size) and torch.isfinite(again.float()).all()


def test_padded_forward_on_cuda_matches_the_pack(weights, pack):
    model = build(weights, "cuda", torch.bfloat16)
    ids, lengths = pack
    padded = torch.full((len(LENGTHS), max(LENGTHS)), 3)
    for row, chunk in enumerate(ids.split(LENGTHS)):
        padded[row, : len(chunk)] = chunk
    mask = (torch.arange(max(LENGTHS))[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        hidden = model(padded.cuda(), mask.cuda())
        packed = model.forward_packed(ids.cuda(), lengths)
    assert torch.equal(hidden[mask.cuda().bool()], packed)
    assert torch.all(hidden[~mask.cuda().bool()] == 0)


@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_runs_are_byte_identical(weights, pack, compiled: bool):
    runs = []
    for _ in range(2):  # a fresh model each time: nothing carried over between runs
        model = build(weights, "cuda", torch.bfloat16)
        if compiled:
            model.compile_layers()
        with torch.inference_mode():
            runs.append([model.forward_packed(pack[0].cuda(), pack[1]) for _ in range(2)])
    first = runs[0][0]
    assert all(torch.equal(first, run) for pair in runs for run in pair)
