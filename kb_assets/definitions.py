"""The one Definitions of the code location: assets, checks, resources, schedules and sensors.

The recipe is read at load time for its settings only (chromosome partitions, code versions): loading the
definitions needs no input file, so the UI shows the graph before any data exists.
"""

from __future__ import annotations

import os

import dagster as dg

from kb_assets.assets.cohort import build_cohort_assets
from kb_assets.assets.diagnostics import build_diagnostic_assets
from kb_assets.assets.embeddings import build_embedding_assets
from kb_assets.assets.haplotypes import build_haplotype_assets
from kb_assets.assets.reference import build_reference_assets
from kb_assets.partitions import chromosome_partitions
from kb_assets.resources import CohortResource, EncoderResource, GenomeResource, RecipeResource, WarehouseResource
from kb_assets.schedules import build_automation
from kb_assets.settings import Recipe, load_recipe


def build_resources(recipe: Recipe) -> dict[str, dg.ConfigurableResource]:
    inputs = recipe.inputs
    return {
        "recipe": RecipeResource(path=str(recipe.source)),
        "genome": GenomeResource(
            fasta=str(inputs.fasta), gtf=str(inputs.gtf), gene_set=str(inputs.gene_set), build=recipe.reference.build
        ),
        "cohort": CohortResource(
            vcf=str(inputs.vcf) if inputs.vcf else None,
            covariates=str(inputs.covariates) if inputs.covariates else None,
        ),
        "encoder": EncoderResource(
            checkpoint=str(inputs.checkpoint), device=recipe.encoder.device, dtype=recipe.encoder.dtype,
            compile=recipe.encoder.compile,
        ),
        "warehouse": WarehouseResource(root=str(recipe.warehouse.root)),
    }


def build_definitions(recipe: Recipe) -> dg.Definitions:
    chromosomes = chromosome_partitions(recipe)
    reference = build_reference_assets(recipe, chromosomes)
    reference_sequences = reference[-1]
    haplotypes = build_haplotype_assets(recipe, chromosomes, reference_sequences)
    embeddings = build_embedding_assets(recipe, chromosomes, reference_sequences, haplotypes[0])
    cohort = build_cohort_assets(recipe, gene_set=reference[2], gene_embeddings=embeddings[-1])
    assets = [*reference, *haplotypes, *embeddings, *cohort,
              *build_diagnostic_assets(recipe, gene_annotations=reference[1], gene_set=reference[2],
                                       reference_sequences=reference_sequences, subject_haplotypes=haplotypes[0],
                                       gene_embeddings=embeddings[-1])]
    return dg.Definitions(assets=assets, resources=build_resources(recipe), **build_automation(recipe, assets))


defs = build_definitions(load_recipe(os.environ.get("KB_ASSETS_RECIPE"), require_inputs=False))
