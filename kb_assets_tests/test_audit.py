"""The lineage audit: what made an output, and when it went stale."""

from __future__ import annotations

import json

import pytest

from kb_assets.audit import format_text, summary, trace
from kb_assets.cli import main
from kb_assets.storage import Warehouse


@pytest.fixture
def built(make_recipe, materialize):
    recipe = make_recipe(encoder={"dtype": "float32"}, pca={"n_components": 8})
    materialize(recipe)
    return recipe, Warehouse(recipe.warehouse.root)


def test_audit_names_model_tokenizer_settings_and_inputs(built):
    recipe, warehouse = built
    root = trace(warehouse, "subject_embeddings_pca")
    facts = summary(root)
    assert facts["rc_mode"] == ["average"] and facts["pooling_strategy"] == ["mean"]
    assert facts["model_id"] == ["DNABERT-2-demo"] and len(facts["model_sha256"][0]) == 64
    assert facts["dtype"] == ["float32"] and facts["recipe_id"] == ["genetics_gene_fm_pca512_v1"]
    labels = {node.label for node in root.walk()}
    assert {"gene_embeddings[chr1]", "gene_embeddings[chr2]", "gene_embeddings[chrX]", "subject_haplotypes[chrX]",
            "reference_genome", "covariates", "cv_folds"} <= labels
    inputs = {name for node in root.walk() for name in node.inputs}
    assert inputs == {"fasta", "gtf", "gene_set", "vcf", "tokenizer", "checkpoint", "covariates"}
    assert not any(node.stale for node in root.walk())
    assert "Status: current" in format_text(root)


def test_audit_flags_a_newer_upstream_partition_and_a_changed_input(built, make_recipe, materialize):
    recipe, warehouse = built
    cls = make_recipe("cls", encoder={"dtype": "float32", "pooling": "cls"},
                      warehouse={"root": str(recipe.warehouse.root)})
    materialize(cls, partitions=["chr2"])
    recipe.inputs.covariates.write_text(recipe.inputs.covariates.read_text() + "\n")
    text = format_text(trace(warehouse, "subject_embeddings_pca"))
    assert "Status: STALE" in text
    assert "gene_embeddings[chr2] is newer than what this was built from" in text
    assert "input covariates changed since" in text
    # The tree shows what the output was built from; the partition itself now says cls.
    assert summary(trace(warehouse, "subject_embeddings_pca"))["pooling_strategy"] == ["mean"]
    assert summary(trace(warehouse, "gene_embeddings", "chr2"))["pooling_strategy"] == ["cls"]


def test_cli_prints_json(built, capsys, monkeypatch, tmp_path):
    recipe, _ = built
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("KB_ASSETS_RECIPE", str(recipe.source))  # main() sets it; monkeypatch restores it
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert main(["audit", "gene_embeddings", "--partition", "chr2", "--json", "--recipe", str(recipe.source)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["tokenizer_version"][0] == report["lineage"]["facts"]["tokenizer_version"]
    assert report["lineage"]["run_status"] == "run not in this Dagster instance"
    assert main(["audit", "gene_embeddings", "--partition", "chrY", "--recipe", str(recipe.source)]) == 2
    assert "was never materialized" in capsys.readouterr().err
