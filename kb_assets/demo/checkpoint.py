"""The demo checkpoint: the shared tiny DNABERT-2 shape, its BPE tokenizer trained on the whole demo genome."""

from __future__ import annotations

from pathlib import Path

from kb_assets.benchmarks.synthetic import write_tiny_checkpoint
from kb_assets.demo.layout import DEMO_SEED
from kb_assets.encoders.checkpoint import BIN_WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_CONFIG_FILE
from kb_assets.encoders.tokenizer import TOKENIZER_FILE

CHECKPOINT_FILES = (CONFIG_FILE, BIN_WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)


def write_demo_checkpoint(folder: Path, genome: dict[str, str]) -> None:
    """A tiny DNABERT-2 checkpoint: a BPE tokenizer trained on the demo genome, seeded random weights. A folder
    missing any of CHECKPOINT_FILES is one an interrupted run left behind (the tokenizer files are written last)."""
    write_tiny_checkpoint(folder, genome.values(), seed=DEMO_SEED)
