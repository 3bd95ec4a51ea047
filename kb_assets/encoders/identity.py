"""What a checkpoint is, without loading its model: enough to key caches and facts, tokenize and plan windows before
any forward pass, for every encoder family (kb_assets.encoders.families)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kb_assets.encoders.encoder import resolve_checkpoint, resolve_device, resolve_dtype
from kb_assets.encoders.families import Family, RcModeNative, detect_family, read_config_json
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256


@dataclass(frozen=True)
class CheckpointIdentity:
    folder: Path
    model_id: str
    family: Family
    weights: Path  # the weights file (or a sharded checkpoint's index)
    model_sha256: str  # as the loaded encoder's model_sha256
    tokenizer: object  # the family's tokenizer (kb_assets.encoders.engine.WindowTokenizer)
    hidden_size: int
    max_tokens: int  # the model context in tokens, specials included
    rc_mode_native: RcModeNative  # "equivariant": one pass is RC-invariant (Caduceus-PS); else None
    device: str  # as the loader would resolve "auto"
    dtype: str  # "bfloat16" | "float32", likewise

    @property
    def tokenizer_version(self) -> str:
        return self.tokenizer.version

    def rc_mode(self, requested: str) -> str:
        """What RC handling embedding does: "equivariant" for a model that is RC-invariant in one pass, else the
        recipe's rc setting ("average" or "none")."""
        return "equivariant" if self.rc_mode_native == "equivariant" else requested


def checkpoint_files(model: str | os.PathLike) -> tuple[Path, Path]:
    """(the weights file, the file that defines the tokenizer) of a checkpoint, found without hashing or loading
    anything: what input observation stats every minute. A sharded checkpoint gives its index, a transformers
    tokenizer of several files the first of them (tokenizer.json where there is one)."""
    folder, _ = resolve_checkpoint(model)
    family = detect_family(folder)
    if family == "dnabert2":
        from kb_assets.encoders.checkpoint import weights_file
        from kb_assets.encoders.tokenizer import TOKENIZER_FILE

        return weights_file(folder), folder / TOKENIZER_FILE
    if family == "caduceus":
        from kb_assets.encoders.caduceus.checkpoint import weights_file
        from kb_assets.encoders.caduceus.tokenizer import TOKENIZER_CONFIG_FILE

        return weights_file(folder), folder / TOKENIZER_CONFIG_FILE
    from kb_assets.encoders.hf import SHARDED_INDEX_FILES, TOKENIZER_FILES, WEIGHTS_FILES

    def first(names: tuple[str, ...], what: str) -> Path:
        present = [folder / name for name in names if (folder / name).is_file()]
        if not present:
            raise InputError(folder, None, f"no {what} ({', '.join(names)})", f"copy the checkpoint's {what} into "
                             "the folder")
        return present[0]

    return first((*WEIGHTS_FILES, *SHARDED_INDEX_FILES), "weights"), first(TOKENIZER_FILES, "tokenizer files")


def checkpoint_identity(model: str | os.PathLike, device: str = "auto", dtype: str = "auto") -> CheckpointIdentity:
    folder, model_id = resolve_checkpoint(model)
    family = detect_family(folder)
    target = resolve_device(device)
    if family == "dnabert2":
        from kb_assets.encoders.checkpoint import read_config, weights_file
        from kb_assets.encoders.tokenizer import load_tokenizer

        config = read_config(folder)
        weights, tokenizer = weights_file(folder), load_tokenizer(folder)
        hidden, max_tokens, native = config.hidden_size, config.max_position_embeddings, None
        sha256 = file_sha256(weights)
    elif family == "caduceus":
        from kb_assets.encoders.caduceus import CaduceusTokenizer, read_caduceus_config
        from kb_assets.encoders.caduceus.checkpoint import weights_file

        config = read_caduceus_config(folder)
        weights, tokenizer = weights_file(folder), CaduceusTokenizer(folder)
        hidden, max_tokens = config.d_model, tokenizer.model_max_length
        native = "equivariant" if config.rcps else None
        sha256 = file_sha256(weights)
    else:
        from kb_assets.encoders.hf import (
            SHARDED_INDEX_FILES,
            WEIGHTS_FILES,
            TransformersTokenizer,
            weights_sha256,
        )

        raw = read_config_json(folder)
        tokenizer = TransformersTokenizer(folder)
        weights = next((folder / name for name in (*WEIGHTS_FILES, *SHARDED_INDEX_FILES)
                        if (folder / name).is_file()), folder)
        sha256 = weights_sha256(folder)
        hidden = int(raw.get("hidden_size") or raw.get("d_model"))
        limits = [raw["max_position_embeddings"]] if raw.get("max_position_embeddings") else []
        max_tokens = min([*limits, tokenizer.model_max_length])
        native = None
    return CheckpointIdentity(
        folder=folder, model_id=model_id, family=family, weights=weights, model_sha256=sha256, tokenizer=tokenizer,
        hidden_size=hidden, max_tokens=max_tokens, rc_mode_native=native, device=str(target),
        dtype=str(resolve_dtype(dtype, target)).removeprefix("torch."),
    )
