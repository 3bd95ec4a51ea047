"""Encoder families: tell from a checkpoint's config.json which native implementation loads it, and load it.

- "dnabert2": DNABERT-2 (config.json without model_type, or "bert", with `alibi_starting_size` or an auto_map into
  `bert_layers`), kb_assets' own model (`kb_assets.encoders.encoder.load_encoder`).
- "caduceus": model_type "caduceus", kb_assets' own Caduceus (`kb_assets.encoders.caduceus`).
- "transformers": a model_type that `transformers` implements itself, with no auto_map (a config that names its
  own code could compute something else than the native class of the same name), loaded through its Auto classes
  with trust_remote_code=False (`kb_assets.encoders.hf`).

Anything else, and any checkpoint whose only way to load is its own Python code, stops with one InputError.
`transformers` is imported only when a config needs the third family.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from kb_assets.encoders.encoder import Encoder, load_encoder, resolve_checkpoint
from kb_assets.errors import InputError

CONFIG_FILE = "config.json"
Family = Literal["dnabert2", "caduceus", "transformers"]
RcModeNative = Literal["equivariant"] | None
NATIVE_FAMILIES_TEXT = (
    "kb_assets loads these natively, never running code from the checkpoint: DNABERT-2 (zhihan1996/DNABERT-2-117M "
    "layout), Caduceus (model_type 'caduceus', PS and PH), and any model_type that transformers implements itself "
    "(e.g. 'esm' for Nucleotide Transformer v1, 'bert', 'llama') without an auto_map"
)


class FamilyTokenizer(Protocol):
    """What the engine needs of a family's tokenizer."""

    version: str  # sha256 of the file(s) that define it
    vocab_size: int
    path: Path
    prefix_ids: tuple[int, ...]  # ids the model expects before each window
    suffix_ids: tuple[int, ...]  # and after it
    pad_id: int
    unk_ids: frozenset[int]  # ids standing for non-ACGT bases; not pooled

    def encode_batch_with_offsets(self, sequences: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]: ...

    def id_to_token(self, token_id: int) -> str | None: ...


@dataclass(frozen=True)
class FamilyEncoder:
    """A loaded encoder of the caduceus or transformers family.

    `model(input_ids [B, L], attention_mask [B, L])` → last hidden states [B, L, hidden_size] (values at padded
    positions are arbitrary); eval mode, no grad, on `device` in `dtype`. `rc_mode_native` is "equivariant" when
    one forward pass already gives RC-symmetric per-token outputs (Caduceus-PS), else None (the engine averages
    the forward and reverse-complement passes).
    """

    family: Family
    model_id: str
    model_sha256: str  # sha256 of the weights file
    model: torch.nn.Module
    tokenizer: FamilyTokenizer
    rc_mode_native: RcModeNative
    hidden_size: int
    max_tokens: int  # context incl. special tokens
    device: torch.device
    dtype: torch.dtype


def read_config_json(folder: Path) -> dict:
    """config.json of a checkpoint folder as a dict (data only), or one InputError."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise InputError(file, None, "config.json not found", "point at a checkpoint folder that holds config.json")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(file, None, f"not valid JSON ({err})", "copy config.json from the checkpoint again") from err
    if not isinstance(raw, dict):
        raise InputError(file, None, "not a JSON object", "copy config.json from the checkpoint again")
    return raw


def _is_dnabert2(raw: dict) -> bool:
    auto_map = raw.get("auto_map") if isinstance(raw.get("auto_map"), dict) else {}
    names_bert_layers = any(isinstance(target, str) and target.startswith("bert_layers.")
                            for target in auto_map.values())
    return raw.get("model_type", "bert") == "bert" and ("alibi_starting_size" in raw or names_bert_layers)


def transformers_knows(model_type: str) -> bool:
    """Whether transformers has its own config and base model class for this model_type."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES and model_type in MODEL_MAPPING_NAMES


def detect_family(folder: str | os.PathLike) -> Family:
    """The family of a checkpoint folder, from its config.json alone; one InputError when none fits."""
    folder = Path(folder)
    raw = read_config_json(folder)
    file = folder / CONFIG_FILE
    model_type = raw.get("model_type")
    if model_type == "caduceus":
        return "caduceus"
    if _is_dnabert2(raw):
        return "dnabert2"
    if not isinstance(model_type, str) or not model_type:
        raise InputError(file, "model_type", "no model_type, and not a DNABERT-2 config either",
                         f"point at a checkpoint of a supported family: {NATIVE_FAMILIES_TEXT}")
    if "auto_map" in raw:
        raise InputError(file, "auto_map", f"model_type {model_type!r} with an auto_map: this checkpoint loads "
                         "only through its own Python code (trust_remote_code), which kb_assets never runs",
                         f"use a checkpoint of a supported family: {NATIVE_FAMILIES_TEXT}")
    if not transformers_knows(model_type):
        raise InputError(file, "model_type", f"model_type {model_type!r} is neither DNABERT-2, Caduceus nor a model "
                         "that transformers implements", f"use a checkpoint of a supported family: "
                         f"{NATIVE_FAMILIES_TEXT}")
    return "transformers"


def load_any_encoder(
    model: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    compile: bool = False,
) -> Encoder | FamilyEncoder:
    """Load a checkpoint folder (or a hub id already in the local Hugging Face cache) with its family's loader.

    DNABERT-2 comes back as `load_encoder` returns it (an `Encoder`, its layers compiled with `compile`); the other
    families as a `FamilyEncoder` (`compile` does not apply to them).
    """
    folder, model_id = resolve_checkpoint(model)
    family = detect_family(folder)
    if family == "dnabert2":
        return load_encoder(model, device, dtype, compile=compile)
    if family == "caduceus":
        from kb_assets.encoders.caduceus.checkpoint import load_caduceus_encoder

        return load_caduceus_encoder(folder, device, dtype, model_id=model_id)
    from kb_assets.encoders.hf import load_transformers_encoder

    return load_transformers_encoder(folder, device, dtype, model_id=model_id)
