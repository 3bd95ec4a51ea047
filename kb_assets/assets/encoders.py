"""Encoders side by side: one asset set per encoder of the recipe.

Why one asset set per encoder rather than a second partition dimension: each encoder is its own lineage (its own
checkpoint and tokenizer inputs, code versions, cache and GPU needs), so its staleness, audit and backfills read
like the primary encoder's; a backfill of `gene_embeddings` and `caduceus_ps/gene_embeddings` over chromosomes is
one selection in the UI, while the shared stages (reference, haplotypes, covariates, folds, brain table) exist
once. The recipe's primary encoder (inputs.checkpoint) keeps the plain names; each further encoder
(inputs.compare_with) prefixes its asset keys, groups, datasets and catalog views with its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from kb_assets.encoders.chromosome import encoder_dataset
from kb_assets.settings import Recipe


@dataclass(frozen=True)
class EncoderAssets:
    """How one encoder's assets, datasets, groups, inputs and resource are named."""

    name: str  # "" for the primary encoder
    checkpoint: Path

    @property
    def label(self) -> str:
        return self.name or "primary"

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, asset]) if self.name else dg.AssetKey(asset)

    def dataset(self, dataset: str) -> str:
        return encoder_dataset(self.name, dataset)

    def group(self, group: str) -> str:
        return f"{self.name}_{group}" if self.name else group

    def input(self, name: str) -> str:
        """The input source of this encoder's checkpoint weights or tokenizer ("checkpoint", "tokenizer")."""
        return f"{self.name}_{name}" if self.name else name

    @property
    def resource_key(self) -> str:
        return f"encoder_{self.name}" if self.name else "encoder"


def recipe_encoders(recipe: Recipe) -> list[EncoderAssets]:
    """The primary encoder, then the recipe's further encoders in their order."""
    return [EncoderAssets("", recipe.inputs.checkpoint),
            *(EncoderAssets(name, path) for name, path in recipe.inputs.compare_with.items())]
