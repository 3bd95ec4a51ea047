"""The code location: loads from the recipe alone (its input files as observable source assets, its resources the
deployment's), and `dagster definitions validate` accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from kb_assets.definitions import build_definitions
from kb_assets.settings import DEMO_RECIPE, PROJECT_ROOT, RECIPE_ID_TAG, RECIPE_PATH_TAG, load_recipe

ASSETS = {
    "reference_genome", "gene_annotations", "gene_set", "reference_sequences", "subject_haplotypes",
    "tokenized_genes", "gene_embeddings", "covariates", "cv_folds", "subject_matrix", "subject_embeddings_pca",
    "rc_stability", "pooling_comparison", "bpe_token_report",
}


# The input files each asset reads, as observable source assets (kb_assets.assets.inputs): their observations are
# what Dagster's provenance links every materialization to.
READS = {
    "fasta": {"reference_genome"}, "gtf": {"gene_annotations"}, "gene_set": {"gene_set"},
    "vcf": {"subject_haplotypes", "covariates"}, "covariates": {"covariates"},
    "tokenizer": {"tokenized_genes"}, "checkpoint": {"gene_embeddings"},
}


def test_graph_loads_without_any_input_file(tmp_path):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(
        "recipe_id: r\ninputs: {fasta: a.fa, gtf: a.gtf, gene_set: g.tsv, checkpoint: m}\n"
        "reference: {chromosomes: [chr7, chr9]}\n"
    )
    defs = build_definitions(load_recipe(recipe_file, require_inputs=False))
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.materializable_asset_keys} == ASSETS
    # The recipe names no VCF and no covariates: only the inputs it names are observed.
    inputs = {key for key in graph.get_all_asset_keys() if not graph.get(key).is_materializable}
    assert {key.to_user_string() for key in inputs} == {
        "inputs/fasta", "inputs/gtf", "inputs/gene_set", "inputs/tokenizer", "inputs/checkpoint"}
    assert all(graph.get(key).is_observable for key in inputs)
    partitions = graph.get(dg.AssetKey("gene_embeddings")).partitions_def
    assert partitions.get_partition_keys() == ["chr7", "chr9"]
    assert defs.resolve_assets_def("gene_embeddings").op.pool == "gpu"


def test_every_input_file_is_an_observed_source_of_the_assets_that_read_it():
    """The recipe is no resource (the assets read the Recipe the definitions were built from); the resources are
    the deployment's: the warehouse and an encoder per checkpoint (the recipe's, and each one compared with it)."""
    recipe = load_recipe(DEMO_RECIPE, require_inputs=False)
    defs = build_definitions(recipe)
    graph = defs.resolve_asset_graph()
    for name, readers in READS.items():
        children = {key.to_user_string() for key in graph.get(dg.AssetKey(["inputs", name])).child_keys}
        assert readers <= children, f"inputs/{name} feeds {children}, not {readers - children}"
    assert set(defs.resources) == {"encoder", "warehouse", *(f"encoder_{name}" for name in recipe.inputs.compare_with)}


def test_dagster_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_a_run_launched_without_tags_is_tagged_with_its_recipe(make_recipe):
    """The UI's and backfills' runs use the implicit asset job, which carries no definition-level tags: the
    warehouse resource adds the recipe's, so the runs list says which recipe each run belongs to."""
    recipe = make_recipe("tagged")
    defs = build_definitions(recipe)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("gene_set")], instance=instance, raise_on_error=False)
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[RECIPE_ID_TAG] == recipe.recipe_id and tags[RECIPE_PATH_TAG] == str(recipe.source)
    assert defs.resolve_job_def("chromosome_embeddings").tags[RECIPE_ID_TAG] == recipe.recipe_id
