"""The demo checkpoint: the shared tiny DNABERT-2 shape, its BPE tokenizer trained on the whole demo genome."""

from __future__ import annotations

from pathlib import Path

from kb_assets.benchmarks.synthetic import CHECKPOINT_FILES, write_tiny_checkpoint
from kb_assets.demo.layout import DEMO_SEED

__all__ = ["CHECKPOINT_FILES", "write_demo_checkpoint"]


def write_demo_checkpoint(folder: Path, genome: dict[str, str]) -> None:
    """A tiny DNABERT-2 checkpoint: a BPE tokenizer trained on the demo genome, seeded random weights. A folder
    missing any of CHECKPOINT_FILES is one an interrupted run left behind (the tokenizer files are written last)."""
    write_tiny_checkpoint(folder, genome.values(), seed=DEMO_SEED)
