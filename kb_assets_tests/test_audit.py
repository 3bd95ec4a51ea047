"""The lineage audit, read from Dagster's records: what made an output, and when and why it went stale."""

from __future__ import annotations

import json

import pytest

from kb_assets.audit import Auditor, format_partitions, format_text, summary
from kb_assets.cli import main
from kb_assets.definitions import build_definitions
from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import materialized_with_own_covariates, write_recipe


@pytest.fixture(scope="module")
def built(demo_recipe, tmp_path_factory):
    return materialized_with_own_covariates(tmp_path_factory.mktemp("audit"), demo_recipe)


def auditor(recipe, materialize) -> Auditor:
    return Auditor(materialize.instance, build_definitions(recipe), Warehouse(recipe.warehouse.root), recipe)


def test_audit_names_model_tokenizer_settings_and_inputs(built):
    recipe, materialize = built
    root = auditor(recipe, materialize).trace("subject_embeddings_pca")
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
    text = format_text(root)
    assert "Status: current" in text
    # Partitions made alike are one line: the three gene_embeddings partitions under subject_matrix.
    assert "gene_embeddings[chr1, chr2, chrX]" in text
    assert all(node.run_status == "SUCCESS" for node in root.walk())


def test_unknown_asset_and_partition_summary(built):
    recipe, materialize = built
    audit = auditor(recipe, materialize)
    with pytest.raises(LookupError, match="unknown asset 'gene_embedding'; the assets are: .*gene_embeddings"):
        audit.trace("gene_embedding")
    statuses = audit.partitions("gene_embeddings")
    assert [(s.partition, s.status) for s in statuses] == [("chr1", "current"), ("chr2", "current"),
                                                           ("chrX", "current")]
    assert "3 current" in format_partitions("gene_embeddings", statuses)


def test_audit_names_what_changed(built):
    recipe, materialize = built
    cls = write_recipe(recipe.source.parent / "cls", recipe, genes=None, encoder={"dtype": "float32",
                                                                                     "pooling": "cls"},
                       warehouse={"root": str(recipe.warehouse.root)})
    materialize(cls, partitions=["chr2"])
    recipe.inputs.covariates.write_text(recipe.inputs.covariates.read_text() + "\n")
    audit = auditor(recipe, materialize)
    text = format_text(audit.trace("subject_embeddings_pca"))
    assert "Status: STALE" in text
    assert "gene_embeddings[chr2] is newer than what this was built from (pooling_strategy mean → cls)" in text
    assert "input covariates changed since" in text
    # The tree shows what the output was built from; the partition itself now says cls, and under the mean
    # recipe that partition is stale because its settings differ from the recipe's.
    assert summary(audit.trace("subject_embeddings_pca"))["pooling_strategy"] == ["mean"]
    assert summary(audit.trace("gene_embeddings", "chr2"))["pooling_strategy"] == ["cls"]
    by_partition = {s.partition: s for s in audit.partitions("gene_embeddings")}
    assert by_partition["chr2"].status == "stale" and by_partition["chr1"].status == "current"
    assert "pooling_strategy cls → mean" in by_partition["chr2"].reasons[0]


def test_cli_prints_json_and_a_partition_summary(built, capsys, monkeypatch):
    recipe, materialize = built
    monkeypatch.setattr("kb_assets.cli.open_instance", lambda _: _Borrowed(materialize.instance))
    assert main(["audit", "gene_embeddings", "--partition", "chr1", "--json", "--recipe", str(recipe.source)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["tokenizer_version"][0] == report["lineage"]["facts"]["tokenizer_version"]
    assert report["lineage"]["run_status"] == "SUCCESS"
    assert main(["audit", "gene_embeddings", "--recipe", str(recipe.source)]) == 0
    assert "Partitions of gene_embeddings:" in capsys.readouterr().out
    assert main(["audit", "gene_embeding", "--recipe", str(recipe.source)]) == 2
    assert "unknown asset 'gene_embeding'" in capsys.readouterr().err


class _Borrowed:
    """The test's instance as a context manager that leaves it open."""

    def __init__(self, instance):
        self.instance = instance

    def __enter__(self):
        return self.instance

    def __exit__(self, *exc):
        return False
