"""Small DNABERT-2 inputs built per test session: random DNA, a BPE tokenizer trained on it, a 2-layer checkpoint
folder in the real layout; and the real tokenizer files from ../shared when present."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from kb_assets.encoders import Encoder, load_encoder, train_bpe_tokenizer, write_checkpoint

REAL_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "dnabert2-117m"
SMALL_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny or see a few tokens: a second thread gains nothing, and OpenMP threads stall for
    orders of magnitude when another process holds a core (parallel CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_dna(length: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(length))


@pytest.fixture(scope="session")
def genome_text() -> str:
    return random_dna(60_000, seed=7)


@pytest.fixture(scope="session")
def small_tokenizer(genome_text: str) -> Tokenizer:
    return train_bpe_tokenizer([genome_text], vocab_size=300)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory, small_tokenizer: Tokenizer) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-dnabert2", small_tokenizer, seed=3, **SMALL_SHAPE)


@pytest.fixture(scope="session")
def small_encoder(small_checkpoint: Path) -> Encoder:
    return load_encoder(small_checkpoint, device="cpu", dtype="float32")


@pytest.fixture
def real_reference() -> Path:
    if not (REAL_REFERENCE / "tokenizer.json").is_file():
        pytest.skip(f"{REAL_REFERENCE} is not present (outside this team's CI)")
    return REAL_REFERENCE
