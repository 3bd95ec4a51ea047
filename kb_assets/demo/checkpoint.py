"""The demo checkpoints: the shared tiny DNABERT-2 shape, its BPE tokenizer trained on the whole demo genome; and a
tiny Caduceus-PS (RC-equivariant) in the public checkpoints' layout, to run side by side with it."""

from __future__ import annotations

from pathlib import Path

from kb_assets.benchmarks.synthetic import CHECKPOINT_FILES, write_tiny_checkpoint
from kb_assets.demo.layout import DEMO_SEED
from kb_assets.encoders.caduceus.checkpoint import (
    SAFETENSORS_WEIGHTS_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    write_caduceus_checkpoint,
)
from kb_assets.encoders.caduceus.tokenizer import TOKENIZER_CONFIG_FILE
from kb_assets.encoders.families import CONFIG_FILE

__all__ = ["CADUCEUS_FILES", "CHECKPOINT_FILES", "write_demo_caduceus", "write_demo_checkpoint"]
# In the order they are written: a folder missing any is one an interrupted run left behind.
CADUCEUS_FILES = (CONFIG_FILE, SAFETENSORS_WEIGHTS_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)


def write_demo_checkpoint(folder: Path, genome: dict[str, str]) -> None:
    """A tiny DNABERT-2 checkpoint: a BPE tokenizer trained on the demo genome, seeded random weights. A folder
    missing any of CHECKPOINT_FILES is one an interrupted run left behind (the tokenizer files are written last)."""
    write_tiny_checkpoint(folder, genome.values(), seed=DEMO_SEED)


def write_demo_caduceus(folder: Path) -> None:
    """A tiny Caduceus-PS checkpoint (d_model 32, 2 layers, seeded random weights, 131,072-base context as the public
    checkpoints)."""
    write_caduceus_checkpoint(folder, variant="ps", d_model=32, n_layer=2, seed=DEMO_SEED)
