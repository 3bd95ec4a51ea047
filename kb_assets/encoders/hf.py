"""The "transformers" family: any DNA model whose architecture `transformers` implements itself (Nucleotide
Transformer v1 = ESM with a k-mer vocabulary, BERT- or Llama-architecture DNA models …), loaded from a local
folder through the Auto classes with trust_remote_code=False and local files only.

The model is the base model (AutoModel) and its output the last hidden state; the tokenizer is the checkpoint's
own. Fast tokenizers give base offsets directly; for the others (e.g. the ESM tokenizer) they are derived by
spelling the tokens back onto the sequence. `transformers` is imported inside the functions, so code that never
loads such a checkpoint never pays for the import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from kb_assets.encoders.encoder import resolve_device, resolve_dtype
from kb_assets.encoders.families import NATIVE_FAMILIES_TEXT, FamilyEncoder, read_config_json
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256

# Files that can define a transformers tokenizer; `version` hashes those present.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "special_tokens_map.json", "tokenizer_config.json")
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
SHARDED_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
BASES = frozenset("ACGT")
# Subword markers that are not part of the bases a token spells.
_SUBWORD_MARKERS = ("##", "▁", "Ġ")
# transformers' tokenizer `model_max_length` when the tokenizer sets none.
_NO_LIMIT = 10**12


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers prints a load report and progress bars on every load; errors are what matter here."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def tokenizer_version(folder: Path) -> str:
    """sha256 of the tokenizer's defining file when there is one, else of the list "name sha256" of them all."""
    present = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        raise InputError(folder, None, "no tokenizer files (tokenizer.json, vocab.txt, tokenizer_config.json …)",
                         "copy the checkpoint's tokenizer files into the folder")
    if len(present) == 1:
        return file_sha256(present[0])
    listing = "".join(f"{file.name} {file_sha256(file)}\n" for file in present)
    return hashlib.sha256(listing.encode()).hexdigest()


class TransformersTokenizer:
    """A checkpoint's own transformers tokenizer, with what the engine needs (see `FamilyTokenizer`)."""

    def __init__(self, folder: Path):
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():
            try:
                tokenizer_config = json.loads(config_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InputError(config_file, None, f"not valid JSON ({err})",
                                 "copy tokenizer_config.json from the checkpoint again") from err
            if isinstance(tokenizer_config, dict) and "auto_map" in tokenizer_config:
                raise InputError(config_file, "auto_map", "the tokenizer loads only through the checkpoint's own "
                                 "Python code (trust_remote_code), which kb_assets never runs",
                                 f"use a checkpoint of a supported family: {NATIVE_FAMILIES_TEXT}")
        self.version = tokenizer_version(folder)
        from transformers import AutoTokenizer

        try:
            with _quiet_transformers():
                self._tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False,
                                                                local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(folder, "tokenizer", f"transformers could not load the tokenizer ({err})",
                             "copy the checkpoint's tokenizer files (tokenizer_config.json and tokenizer.json or "
                             "vocab.txt) into the folder") from err
        tokenizer = self._tokenizer
        self.path = folder
        self.vocab_size = len(tokenizer)
        if tokenizer.pad_token_id is None:
            raise InputError(config_file, "pad_token", "the tokenizer has no padding token",
                             "use a tokenizer that defines pad_token")
        self.pad_id = int(tokenizer.pad_token_id)
        self.model_max_length = int(min(tokenizer.model_max_length, _NO_LIMIT))
        self.prefix_ids, self.suffix_ids = self._special_frame()
        special = set(tokenizer.all_special_ids)
        non_acgt = {
            token_id for token, token_id in tokenizer.get_vocab().items()
            if token_id not in special and not set(_strip_markers(token)) <= BASES
        }
        unknown = {tokenizer.unk_token_id} if tokenizer.unk_token_id is not None else set()
        self.unk_ids = frozenset(non_acgt | unknown)

    def _special_frame(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ids the tokenizer puts before and after a sequence, read off a probe."""
        probe = "ACGTACGTAC"
        bare = self._tokenizer(probe, add_special_tokens=False)["input_ids"]
        framed = self._tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(framed) - len(bare) + 1):
            if framed[start : start + len(bare)] == bare:
                return tuple(framed[:start]), tuple(framed[start + len(bare) :])
        raise InputError(self.path, "tokenizer", "adding special tokens changes how the sequence itself is "
                         "tokenized", "use a tokenizer whose special tokens only frame the sequence")

    def encode_batch_with_offsets(self, sequences: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids without special tokens, each with its (start, end) offsets in the uppercased sequence."""
        texts = [sequence.upper() for sequence in sequences]
        # Quiet: transformers warns about every sequence longer than the model, which the engine cuts into windows.
        with _quiet_transformers():
            if self._tokenizer.is_fast:
                encoded = self._tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
                return [(ids, [tuple(span) for span in spans])
                        for ids, spans in zip(encoded["input_ids"], encoded["offset_mapping"])]
            encoded = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [(ids, self._derived_offsets(text, ids)) for text, ids in zip(texts, encoded)]

    def _derived_offsets(self, text: str, ids: list[int]) -> list[tuple[int, int]]:
        """Offsets of a tokenizer that has none: each token's text is matched at the current position; an unknown
        token covers everything up to where the next token's text starts (or the end)."""
        tokens = [_strip_markers(token) for token in self._tokenizer.convert_ids_to_tokens(ids)]
        unknown = self._tokenizer.unk_token_id
        offsets: list[tuple[int, int]] = []
        position = 0
        for index, (token_id, token) in enumerate(zip(ids, tokens)):
            if token_id == unknown:
                following = next((t for i, t in zip(ids[index + 1 :], tokens[index + 1 :]) if i != unknown), None)
                end = len(text) if following is None else text.find(following, position + 1)
            else:
                end = position + len(token) if text.startswith(token, position) else -1
            if end <= position:
                raise InputError(self.path, f"token {token!r}", "the tokenizer gives no offsets and its tokens do "
                                 f"not spell the sequence from base {position} on", "use a fast tokenizer "
                                 "(tokenizer.json) or one whose tokens are pieces of the sequence")
            offsets.append((position, end))
            position = end
        if position != len(text):
            raise InputError(self.path, None, f"the tokens spell {position} of {len(text)} bases",
                             "use a fast tokenizer (tokenizer.json) or one whose tokens are pieces of the sequence")
        return offsets

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.convert_ids_to_tokens(token_id)

    def __repr__(self) -> str:
        return f"TransformersTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, version={self.version[:12]})"


def _strip_markers(token: str) -> str:
    for marker in _SUBWORD_MARKERS:
        token = token.removeprefix(marker)
    return token


class LastHiddenState(nn.Module):
    """A transformers base model as the engine calls it: (input_ids, attention_mask) → last hidden state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def weights_sha256(folder: Path) -> str:
    """sha256 of the weights file; for a sharded checkpoint, of the list "name sha256" of its index and shards."""
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return file_sha256(folder / name)
    for name in SHARDED_INDEX_FILES:
        index = folder / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            listing = "".join(f"{file} {file_sha256(folder / file)}\n" for file in [name, *shards])
            return hashlib.sha256(listing.encode()).hexdigest()
    raise InputError(folder, None, f"no weights ({', '.join(WEIGHTS_FILES)} or a sharded index)",
                     "copy the checkpoint's weights into the folder")


def _check_loading(model: nn.Module, info: dict, folder: Path) -> None:
    """Every backbone weight must come from the checkpoint: a missing, stray or misshapen one means config.json does
    not describe these weights. Heads (masked-LM, classifier) are not loaded; the pooler is never used.
    (Loaded with ignore_mismatched_sizes so that transformers reports shapes here instead of raising.)"""
    missing = sorted(key for key in info.get("missing_keys", ()) if not key.startswith("pooler."))
    if missing:
        raise InputError(folder, missing[0], f"weight missing ({len(missing)} in all)",
                         "use the complete checkpoint whose config.json sits beside it")
    backbone = {name for name, _ in model.named_children()}
    prefix = f"{model.base_model_prefix}."
    strays = sorted(key for key in info.get("unexpected_keys", ())
                    if key.removeprefix(prefix).split(".")[0] in backbone)
    if strays:
        raise InputError(folder, strays[0], "backbone weight that config.json does not describe",
                         "use the config.json that belongs to these weights")
    if info.get("mismatched_keys"):
        key, stored, expected = sorted(info["mismatched_keys"])[0]
        raise InputError(folder, key, f"shape {list(stored)} does not match {list(expected)} from config.json",
                         "use the config.json that belongs to these weights")


def max_tokens(model: nn.Module, config: object, tokenizer: TransformersTokenizer) -> int:
    """The context in tokens incl. specials: the tokenizer's model_max_length, capped by learned absolute position
    embeddings when the model has them (ESM/RoBERTa-style ones start after the padding index)."""
    limits = [tokenizer.model_max_length] if tokenizer.model_max_length < _NO_LIMIT else []
    positions = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    if isinstance(positions, nn.Embedding):
        offset = positions.padding_idx + 1 if positions.padding_idx is not None else 0
        limits.append(positions.num_embeddings - offset)
    elif getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    if not limits:
        raise InputError(tokenizer.path, "model_max_length", "neither the tokenizer nor the model states a maximum "
                         "length", "set model_max_length in tokenizer_config.json")
    return min(limits)


def load_transformers_encoder(
    folder: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    model_id: str | None = None,
) -> FamilyEncoder:
    """Load a checkpoint folder of a model type transformers implements, offline and without remote code."""
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    if "auto_map" in read_config_json(folder):
        raise InputError(folder / "config.json", "auto_map", "this checkpoint loads only through its own Python "
                         "code (trust_remote_code), which kb_assets never runs",
                         f"use a checkpoint of a supported family: {NATIVE_FAMILIES_TEXT}")
    tokenizer = TransformersTokenizer(folder)
    target = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target)
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(folder / "config.json", None, f"transformers could not read the config ({err})",
                         "copy config.json from the checkpoint again") from err
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(folder / "config.json", "is_encoder_decoder", "an encoder-decoder model has no single last "
                         "hidden state per input token", "use an encoder or decoder model")
    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(folder, config=config, trust_remote_code=False,
                                                    local_files_only=True, dtype=target_dtype,
                                                    output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(folder, None, f"transformers could not load the model ({err})",
                         "point at a complete checkpoint folder (config.json, weights, tokenizer files)") from err
    _check_loading(model, info, folder)
    if tokenizer.vocab_size > model.get_input_embeddings().num_embeddings:
        raise InputError(tokenizer.path, None, f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.get_input_embeddings().num_embeddings}",
                         "use the tokenizer that belongs to this checkpoint")
    model = model.to(target).eval().requires_grad_(False)
    hidden_size = getattr(config, "hidden_size", None)
    if not isinstance(hidden_size, int):
        raise InputError(folder / "config.json", "hidden_size", "config.json states no hidden_size",
                         "use a checkpoint whose config.json states hidden_size")
    return FamilyEncoder(
        family="transformers",
        model_id=model_id or folder.resolve().name,
        model_sha256=weights_sha256(folder),
        model=LastHiddenState(model).eval(),
        tokenizer=tokenizer,
        rc_mode_native=None,
        hidden_size=hidden_size,
        max_tokens=max_tokens(model, config, tokenizer),
        device=target,
        dtype=target_dtype,
    )


def write_esm_checkpoint(
    folder: str | os.PathLike,
    *,
    kmer: int = 6,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    max_tokens: int = 128,
    seed: int = 0,
) -> Path:
    """A random-weight checkpoint in Nucleotide Transformer v1's layout (EsmForMaskedLM with absolute positions;
    vocab.txt with six specials, every k-mer, then the single bases; the ESM tokenizer), saved with
    save_pretrained; for tests, benchmarks and demos. `max_tokens` counts the special tokens."""
    import itertools

    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kmers = ["".join(bases) for bases in itertools.product("ACGT", repeat=kmer)]
    specials = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
    (folder / "vocab.txt").write_text("\n".join([*specials, *kmers, *"ATCGN"]) + "\n")
    with _quiet_transformers():
        tokenizer = EsmTokenizer(str(folder / "vocab.txt"), model_max_length=max_tokens)
        # Positions start after the padding index (1), as in ESM: max_tokens + 2 rows.
        config = EsmConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size,
                           num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                           intermediate_size=intermediate_size, max_position_embeddings=max_tokens + 2,
                           pad_token_id=1, mask_token_id=2, position_embedding_type="absolute", token_dropout=False,
                           emb_layer_norm_before=False)
        torch.manual_seed(seed)
        EsmForMaskedLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder

