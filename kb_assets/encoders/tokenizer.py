"""The DNABERT-2 BPE tokenizer: load the checkpoint's own tokenizer.json, and train a small tokenizer in the same
layout for demo data and tests.

Usable without the model: the tokenized_genes asset only needs token ids, their base offsets and the tokenizer hash.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256

TOKENIZER_FILE = "tokenizer.json"
# The real checkpoint's layout: five special tokens first, then the four bases.
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
BASES = ("A", "C", "G", "T")
UNK_ID, CLS_ID, SEP_ID, PAD_ID, MASK_ID = range(5)
# Training reads sequences in pieces of this many bases: the BPE trainer rewrites a whole word on every merge
# that touches it, so one 2 Mb word would cost minutes; 1 kb pieces take seconds and still allow 32-nt tokens.
_TRAINING_PIECE_BP = 1000
_NON_ACGT = re.compile(r"[^ACGT]+")


class DnaTokenizer:
    """A DNABERT-2-style BPE tokenizer read from tokenizer.json; uppercases every sequence before encoding.

    Each model window is [CLS] tokens [SEP]; [UNK] (one per N or other non-ACGT base) is never pooled.
    """

    prefix_ids = (CLS_ID,)
    suffix_ids = (SEP_ID,)
    pad_id = PAD_ID
    unk_ids = frozenset({UNK_ID})

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise InputError(file, None, "tokenizer.json not found",
                             "point at a DNABERT-2 checkpoint folder or its tokenizer.json")
        try:
            self._tokenizer = Tokenizer.from_file(str(file))
        except Exception as err:  # the tokenizers library raises a bare Exception for unreadable files
            raise InputError(file, None, f"not a readable Hugging Face tokenizer file ({err})",
                             "copy tokenizer.json from the DNABERT-2 checkpoint again") from err
        self.path = file
        self.version = file_sha256(file)
        self.vocab_size = self._tokenizer.get_vocab_size()
        for token_id, token in enumerate(SPECIAL_TOKENS):
            if self._tokenizer.token_to_id(token) != token_id:
                raise InputError(file, token, f"special token {token} does not have id {token_id}",
                                 "use the tokenizer.json that belongs to the DNABERT-2 checkpoint")
        # The model pipeline adds [CLS]/[SEP] itself, window by window.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def encode(self, sequence: str) -> list[int]:
        """Token ids of an uppercased sequence, without [CLS]/[SEP]."""
        return self._tokenizer.encode(sequence.upper(), add_special_tokens=False).ids

    def encode_batch(self, sequences: list[str]) -> list[list[int]]:
        """`encode` for many sequences at once (tokenized in parallel by the library)."""
        encodings = self._tokenizer.encode_batch([s.upper() for s in sequences], add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def encode_batch_with_offsets(self, sequences: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """`encode_batch`, each sequence's token ids with their (start, end) base offsets in it ([UNK] covers the
        base it stands for)."""
        encodings = self._tokenizer.encode_batch([s.upper() for s in sequences], add_special_tokens=False)
        return [(encoding.ids, encoding.offsets) for encoding in encodings]

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    def __repr__(self) -> str:
        return f"DnaTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, version={self.version[:12]})"


def load_tokenizer(path: str | os.PathLike) -> DnaTokenizer:
    """The tokenizer of a checkpoint folder, or of a tokenizer.json file."""
    return DnaTokenizer(path)


def _training_pieces(sequences: Iterable[str]) -> Iterator[str]:
    for sequence in sequences:
        for run in _NON_ACGT.split(sequence.upper()):
            for start in range(0, len(run), _TRAINING_PIECE_BP):
                yield run[start : start + _TRAINING_PIECE_BP]


def train_bpe_tokenizer(sequences: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """Train a BPE tokenizer in DNABERT-2's layout on DNA sequences.

    [UNK]=0, [CLS]=1, [SEP]=2, [PAD]=3, [MASK]=4, A=5, C=6, G=7, T=8, then the learned merges; no normalizer,
    Whitespace pre-tokenizer, `[CLS] $A [SEP]` post-processor. Characters other than A/C/G/T (N, IUPAC codes)
    only split the training text, so they stay [UNK]. The vocabulary can come out smaller than `vocab_size`
    when the sequences hold too few distinct pairs.
    """
    if vocab_size < len(SPECIAL_TOKENS) + len(BASES):
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(BASES)} (got {vocab_size})")
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(BASES),
        limit_alphabet=len(BASES),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_pieces(sequences), trainer)
    tokenizer = _with_real_id_layout(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return tokenizer


def _with_real_id_layout(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber the vocabulary so the specials and the bases hold the real checkpoint's ids.

    The trainer orders the initial alphabet by frequency, so A/C/G/T can come out in any order; merges refer
    to tokens by text, so renumbering leaves the tokenization unchanged.
    """
    state = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    fixed = (*SPECIAL_TOKENS, *BASES)
    learned = sorted((token for token in vocab if token not in fixed), key=vocab.__getitem__)
    state["model"]["vocab"] = {token: token_id for token_id, token in enumerate((*fixed, *learned))}
    for added in state["added_tokens"]:
        added["id"] = state["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(state))


__all__ = [
    "BASES",
    "CLS_ID",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "DnaTokenizer",
    "load_tokenizer",
    "train_bpe_tokenizer",
]
