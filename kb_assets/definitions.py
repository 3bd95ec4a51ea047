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
from kb_assets.assets.encoders import recipe_encoders
from kb_assets.assets.evaluation import build_evaluation_assets
from kb_assets.assets.haplotypes import build_haplotype_assets
from kb_assets.assets.inputs import build_input_sources
from kb_assets.assets.reference import build_reference_assets
from kb_assets.cluster.k8s import deployment_executor
from kb_assets.cluster.slurm import slurm_settings_from_env
from kb_assets.cluster.slurm_pipes import SlurmPipesClient
from kb_assets.partitions import chromosome_partitions
from kb_assets.resources import EncoderResource, WarehouseResource
from kb_assets.schedules import build_automation
from kb_assets.settings import Recipe, load_recipe, recipe_run_tags

# Deployment settings, per machine rather than per recipe (resources per deployment): the GPUs a node lends to
# gene_embeddings partitions, e.g. "cuda:0,cuda:1"; KB_ASSETS_SLURM and KB_ASSETS_EXECUTOR are read by
# kb_assets.cluster.
GPU_DEVICES_ENV = "KB_ASSETS_GPU_DEVICES"


def build_resources(recipe: Recipe) -> dict[str, object]:
    """The warehouse, one encoder resource per encoder of the recipe (sharing the node's GPUs), SLURM if set."""
    devices = [d.strip() for d in os.environ.get(GPU_DEVICES_ENV, "").split(",") if d.strip()]
    resources: dict[str, object] = {
        encoder.resource_key: EncoderResource(
            checkpoint=str(encoder.checkpoint), device=recipe.encoder.device, dtype=recipe.encoder.dtype,
            compile=recipe.encoder.compile, devices=devices,
        )
        for encoder in recipe_encoders(recipe)
    }
    resources["warehouse"] = WarehouseResource(root=str(recipe.warehouse.root), run_tags=recipe_run_tags(recipe))
    slurm = slurm_settings_from_env()
    if slurm is not None:
        resources["slurm"] = SlurmPipesClient(slurm)
    return resources


def build_definitions(recipe: Recipe) -> dg.Definitions:
    chromosomes = chromosome_partitions(recipe)
    resources = build_resources(recipe)
    encoders = recipe_encoders(recipe)
    # Each stage names the assets it reads by key: no stage needs another's objects.
    assets = [
        *build_input_sources(recipe),
        *build_reference_assets(recipe, chromosomes),
        *build_haplotype_assets(recipe, chromosomes),
        *(asset for encoder in encoders
          for asset in build_embedding_assets(recipe, chromosomes, encoder, slurm="slurm" in resources)),
        *build_cohort_assets(recipe, encoders),
        *build_diagnostic_assets(recipe, encoders),
        *build_evaluation_assets(recipe, encoders),
    ]
    return dg.Definitions(assets=assets, resources=resources, executor=deployment_executor(),
                          **build_automation(recipe))


defs = build_definitions(load_recipe(os.environ.get("KB_ASSETS_RECIPE"), require_inputs=False))
