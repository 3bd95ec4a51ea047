"""What a checkpoint is, without loading it: enough to key caches and lineage before any forward pass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kb_assets.encoders.checkpoint import read_config, weights_file
from kb_assets.encoders.encoder import resolve_checkpoint, resolve_device, resolve_dtype
from kb_assets.encoders.tokenizer import DnaTokenizer, load_tokenizer
from kb_assets.fingerprint import file_sha256


@dataclass(frozen=True)
class CheckpointIdentity:
    folder: Path
    model_id: str
    weights: Path  # pytorch_model.bin or model.safetensors
    model_sha256: str  # of the weights file, as Encoder.model_sha256
    tokenizer: DnaTokenizer
    hidden_size: int
    device: str  # as load_encoder would resolve "auto"
    dtype: str  # "bfloat16" | "float32", likewise

    @property
    def tokenizer_version(self) -> str:
        return self.tokenizer.version


def checkpoint_identity(model: str | os.PathLike, device: str = "auto", dtype: str = "auto") -> CheckpointIdentity:
    folder, model_id = resolve_checkpoint(model)
    target = resolve_device(device)
    weights = weights_file(folder)
    return CheckpointIdentity(
        folder=folder,
        model_id=model_id,
        weights=weights,
        model_sha256=file_sha256(weights),
        tokenizer=load_tokenizer(folder),
        hidden_size=read_config(folder).hidden_size,
        device=str(target),
        dtype=str(resolve_dtype(dtype, target)).removeprefix("torch."),
    )
