"""The Caduceus character tokenizer, as the checkpoints define it in tokenizer_config.json.

Upstream's `CaduceusTokenizer` (tokenization_caduceus.py, never imported here) has a fixed vocabulary: seven
special tokens, then one id per character, "A", "C", "G", "T", "N" unless the config lists others:

    [CLS]=0 [SEP]=1 [BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6 A=7 C=8 G=9 T=10 N=11

Every base is one token; text is uppercased; a character outside the list is [UNK]. The tokenizer appends [SEP]
when asked for special tokens (pretraining's add_eos), but upstream embeds downstream sequences without any
(vep_embeddings.py tokenizes with add_special_tokens=False), and a trailing [SEP] would break the exact
reverse-complement symmetry of the PS model, so the engine adds none: `prefix_ids` and `suffix_ids` are empty.

The file that defines it is tokenizer_config.json, so `version` is its sha256. Written by hand rather than through
`transformers`: the real tokenizer is remote code, and a 5-character lookup needs no library.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_CLASS = "CaduceusTokenizer"
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
CLS_ID, SEP_ID, BOS_ID, MASK_ID, PAD_ID, RESERVED_ID, UNK_ID = range(len(SPECIAL_TOKENS))
DEFAULT_CHARACTERS = ("A", "C", "G", "T", "N")
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
_GET_REAL_TOKENIZER = "copy tokenizer_config.json from the Caduceus checkpoint again"


class CaduceusTokenizer:
    """One id per base; see the module docstring for the vocabulary."""

    prefix_ids: tuple[int, ...] = ()
    suffix_ids: tuple[int, ...] = ()
    pad_id = PAD_ID

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        file = path / TOKENIZER_CONFIG_FILE if path.is_dir() else path
        if not file.is_file():
            raise InputError(file, None, "tokenizer_config.json not found (the Caduceus tokenizer is defined there)",
                             "copy tokenizer_config.json from the Caduceus checkpoint into the folder")
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(file, None, f"not valid JSON ({err})", _GET_REAL_TOKENIZER) from err
        if not isinstance(raw, dict):
            raise InputError(file, None, "not a JSON object", _GET_REAL_TOKENIZER)
        if raw.get("tokenizer_class") != TOKENIZER_CLASS:
            raise InputError(file, "tokenizer_class", f"tokenizer_class {raw.get('tokenizer_class')!r} is not "
                             f"{TOKENIZER_CLASS!r}", _GET_REAL_TOKENIZER)
        characters = raw.get("characters", DEFAULT_CHARACTERS)
        if (not isinstance(characters, (list, tuple)) or not characters
                or not all(isinstance(c, str) and len(c) == 1 and c == c.upper() for c in characters)
                or len(set(characters)) != len(characters)):
            raise InputError(file, "characters", f"characters must be distinct single uppercase characters (got "
                             f"{characters!r})", _GET_REAL_TOKENIZER)
        self.characters = tuple(characters)
        self.vocabulary = (*SPECIAL_TOKENS, *self.characters)
        for token_id, entry in (raw.get("added_tokens_decoder") or {}).items():
            content = entry.get("content") if isinstance(entry, dict) else None
            if not str(token_id).isdigit() or int(token_id) >= len(SPECIAL_TOKENS) \
                    or SPECIAL_TOKENS[int(token_id)] != content:
                raise InputError(file, f"added_tokens_decoder.{token_id}", f"special token {content!r} at id "
                                 f"{token_id} does not match the Caduceus layout {SPECIAL_TOKENS}",
                                 _GET_REAL_TOKENIZER)
        max_length = raw.get("model_max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise InputError(file, "model_max_length", f"model_max_length must be a positive integer, the sequence "
                             f"length the checkpoint was trained on (got {max_length!r})", _GET_REAL_TOKENIZER)
        self.model_max_length = max_length
        self.path = file
        self.version = file_sha256(file)
        self.vocab_size = len(self.vocabulary)
        self.token_ids = {token: token_id for token_id, token in enumerate(self.vocabulary)}
        # ids of characters that are not A/C/G/T, and [UNK]: they stand for unknown bases and are not pooled.
        self.unk_ids = frozenset({UNK_ID} | {self.token_ids[c] for c in self.characters if c not in COMPLEMENT})
        # Code point → id for code points below 256; everything else is [UNK].
        self._lookup = np.full(256, UNK_ID, dtype=np.int64)
        for character in self.characters:
            if ord(character) < 256:
                self._lookup[ord(character)] = self.token_ids[character]
        if any(ord(c) >= 256 for c in self.characters):
            raise InputError(file, "characters", "characters must be Latin-1 letters", _GET_REAL_TOKENIZER)

    def encode(self, sequence: str) -> list[int]:
        """Token ids of the uppercased sequence, one per character, no special tokens."""
        return self._ids(sequence.upper()).tolist()

    def _ids(self, uppercased: str) -> np.ndarray:
        code_points = np.frombuffer(uppercased.encode("utf-32-le"), dtype=np.uint32)
        return np.where(code_points < 256, self._lookup[np.minimum(code_points, 255)], UNK_ID)

    def encode_batch(self, sequences: list[str]) -> list[list[int]]:
        return [self.encode(sequence) for sequence in sequences]

    def encode_batch_with_offsets(self, sequences: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Each sequence's ids with their (start, end) offsets in the uppercased sequence: token i covers base i."""
        encoded = []
        for sequence in sequences:
            uppercased = sequence.upper()
            encoded.append((self._ids(uppercased).tolist(), [(i, i + 1) for i in range(len(uppercased))]))
        return encoded

    def id_to_token(self, token_id: int) -> str | None:
        return self.vocabulary[token_id] if 0 <= token_id < self.vocab_size else None

    def complement_ids(self) -> dict[int, int]:
        """Token id → id of the complementary base, for A/C/G/T; every other token is its own complement."""
        table = {token_id: token_id for token_id in range(self.vocab_size)}
        for base, partner in COMPLEMENT.items():
            if base in self.token_ids and partner in self.token_ids:
                table[self.token_ids[base]] = self.token_ids[partner]
        return table

    def __repr__(self) -> str:
        return f"CaduceusTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, version={self.version[:12]})"


def tokenizer_config(model_max_length: int) -> dict:
    """tokenizer_config.json as the public checkpoints have it."""
    decoder = {
        str(token_id): {"content": token, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
        for token_id, token in enumerate(SPECIAL_TOKENS)
        if token != "[RESERVED]"
    }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "auto_map": {"AutoTokenizer": ["tokenization_caduceus.CaduceusTokenizer", None]},
        "bos_token": "[BOS]",
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "eos_token": "[SEP]",
        "mask_token": "[MASK]",
        "model_max_length": model_max_length,
        "pad_token": "[PAD]",
        "padding_side": "left",
        "sep_token": "[SEP]",
        "tokenizer_class": TOKENIZER_CLASS,
        "unk_token": "[UNK]",
    }


SPECIAL_TOKENS_MAP = {"bos_token": "[BOS]", "cls_token": "[CLS]", "eos_token": "[SEP]", "mask_token": "[MASK]",
                      "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}
