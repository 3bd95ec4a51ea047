"""Chromosome partitions: the recipe's chromosome list, read from the recipe alone (no GTF parse)."""

from __future__ import annotations

import dagster as dg

from kb_assets.settings import Recipe


def chromosome_partitions(recipe: Recipe) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(recipe.reference.chromosomes))
