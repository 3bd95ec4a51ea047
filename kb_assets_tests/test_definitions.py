"""The code location: loads from the recipe alone, and `dagster definitions validate` accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from kb_assets.definitions import build_definitions
from kb_assets.settings import PROJECT_ROOT, load_recipe

ASSETS = {
    "reference_genome", "gene_annotations", "gene_set", "reference_sequences", "subject_haplotypes",
    "tokenized_genes", "gene_embeddings", "covariates", "cv_folds", "subject_matrix", "subject_embeddings_pca",
    "rc_stability", "pooling_comparison", "bpe_token_report",
}


def test_graph_loads_without_any_input_file(tmp_path):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(
        "recipe_id: r\ninputs: {fasta: a.fa, gtf: a.gtf, gene_set: g.tsv, checkpoint: m}\n"
        "reference: {chromosomes: [chr7, chr9]}\n"
    )
    defs = build_definitions(load_recipe(recipe_file, require_inputs=False))
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    partitions = graph.get(dg.AssetKey("gene_embeddings")).partitions_def
    assert partitions.get_partition_keys() == ["chr7", "chr9"]
    assert defs.resolve_assets_def("gene_embeddings").op.pool == "gpu"


def test_dagster_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout
