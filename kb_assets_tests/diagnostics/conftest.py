"""Small inputs for the diagnostics: a 2-layer DNABERT-2 checkpoint on random DNA, a hand-made BPE tokenizer whose
tokens are known, and a warehouse per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from kb_assets.encoders import (
    DnaTokenizer,
    Encoder,
    load_encoder,
    load_tokenizer,
    train_bpe_tokenizer,
    write_checkpoint,
)
from kb_assets.encoders.tokenizer import BASES, SPECIAL_TOKENS
from kb_assets.storage import Warehouse
from kb_assets_tests.encoders.conftest import SMALL_SHAPE, random_dna

# Merges in order: A+T → AT, AT+G → ATG (a codon), G+C → GC.
HAND_MERGES = [("A", "T"), ("AT", "G"), ("G", "C")]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = train_bpe_tokenizer([random_dna(40_000, seed=11)], vocab_size=200)
    return write_checkpoint(tmp_path_factory.mktemp("diagnostics_ckpt") / "tiny", tokenizer, seed=5, **SMALL_SHAPE)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Path) -> Encoder:
    return load_encoder(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


@pytest.fixture(scope="session")
def hand_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> DnaTokenizer:
    """A BPE tokenizer in DNABERT-2's layout with exactly the tokens AT, ATG and GC besides the bases."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *BASES))}
    for left, right in HAND_MERGES:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=HAND_MERGES, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("hand_tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return load_tokenizer(path)
