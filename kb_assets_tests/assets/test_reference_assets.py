"""The reference half of the graph, materialized through Dagster on the demo inputs."""

from __future__ import annotations

import re

import duckdb
import pyarrow.parquet as pq
import pytest

from kb_assets.errors import InputError
from kb_assets.genome import ReferenceGenome, reverse_complement
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import check_evaluations, metadata


def test_graph_writes_regions_and_metadata(make_recipe, materialize):
    recipe = make_recipe()
    results = materialize(recipe)
    warehouse = Warehouse(recipe.warehouse.root)
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as catalog:
        genes = catalog.execute("select gene_name from gene_set order by gene_order").fetchall()
        regions = catalog.execute(
            "select chrom, strand, start, \"end\", sequence from reference_sequences").fetchall()
    assert [g[0] for g in genes] == ["SCN2A_demo", "DLG4_demo", "MECP2_demo", "CHD8_demo"]
    genome = ReferenceGenome(recipe.inputs.fasta)
    assert {strand for _, strand, *_ in regions} == {"+", "-"}
    for chrom, strand, start, end, sequence in regions:
        forward = genome.fetch(chrom, start, end)
        assert sequence == (reverse_complement(forward) if strand == "-" else forward)

    meta = metadata(results, "reference_sequences", "chr2")
    for key in ("dagster/row_count", "dagster/column_schema", "path", "recipe_id", "reference_version",
                "annotation_version"):
        assert key in meta, key
    assert meta["annotation_version"] == "GENCODE v0"
    assert meta["reference_version"].startswith("demo-hg38-like sha256:")
    assert meta["dagster/row_count"] == len([r for r in regions if r[0] == "chr2"])


def test_rematerializing_a_partition_replaces_it_whole(make_recipe, materialize):
    recipe = make_recipe()
    materialize(recipe)
    warehouse = Warehouse(recipe.warehouse.root)
    before = pq.read_table(warehouse.partition_file("reference_sequences", "chr1"))
    materialize(recipe, partitions=["chr1"])
    after = pq.read_table(warehouse.partition_file("reference_sequences", "chr1"))
    assert after.equals(before)
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as catalog:
        (total,) = catalog.execute("select count(*) from reference_sequences").fetchone()
        (distinct,) = catalog.execute("select count(distinct region_id) from reference_sequences").fetchone()
    assert total == distinct


def test_chromosome_without_genes_is_an_empty_partition(make_recipe, materialize):
    recipe = make_recipe(genes=["DLG4_demo"])
    results = materialize(recipe)
    assert metadata(results, "reference_sequences", "chrX")["dagster/row_count"] == 0
    assert metadata(results, "gene_embeddings", "chrX")["dagster/row_count"] == 0
    # One gene on chr1: its distinct vectors are stored, and the view lists REF and the 220 VCF subjects.
    chr1 = metadata(results, "gene_embeddings", "chr1")
    assert chr1["dagster/row_count"] == chr1["distinct_gene_vectors"] and chr1["n_subjects"] == 220
    with duckdb.connect(str(Warehouse(recipe.warehouse.root).catalog_path), read_only=True) as catalog:
        assert catalog.execute("select count(*), count(distinct chrom) from gene_embeddings").fetchone() == (221, 1)


@pytest.mark.parametrize("mode", ["gene_body", "cds", "promoter"])
def test_region_modes_reach_the_partition(make_recipe, materialize, mode):
    recipe = make_recipe(genes=["DLG4_demo"], regions={"mode": mode}, reference={"chromosomes": ["chr1"]})
    results = materialize(recipe, partitions=["chr1"])
    meta = metadata(results, "reference_sequences", "chr1")
    assert meta["region_mode"] == mode
    if mode == "promoter":
        assert meta["total_bp"] == recipe.regions.promoter_upstream + recipe.regions.promoter_downstream


def test_missing_gene_set_entries_fail_and_leave_outputs(make_recipe, materialize):
    recipe = make_recipe()
    materialize(recipe)
    warehouse = Warehouse(recipe.warehouse.root)
    gene_set_file = warehouse.table_file("gene_set")
    before = gene_set_file.read_bytes()

    bad = make_recipe("bad", genes=["DLG4_demo", "NOPE1", "NOPE2"], warehouse={"root": str(recipe.warehouse.root)})
    with pytest.raises(InputError, match="NOPE1.*NOPE2"):
        materialize(bad)
    assert gene_set_file.read_bytes() == before


def test_n_heavy_regions_are_reported_by_a_warning_check(make_recipe, materialize):
    # DLG4_demo carries a 20-base N run in one exon (1.1% of its exons): under the default 10%, over 0.5%.
    lenient = materialize(make_recipe("lenient", genes=["DLG4_demo"], reference={"chromosomes": ["chr1"]}),
                          partitions=["chr1"])
    assert check_evaluations(lenient, "reference_sequences")["non_acgt_share"][-1].passed
    strict = materialize(make_recipe("strict", genes=["DLG4_demo"], reference={"chromosomes": ["chr1"]},
                                     regions={"max_n_fraction": 0.005}), partitions=["chr1"])
    evaluation = check_evaluations(strict, "reference_sequences")["non_acgt_share"][-1]
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert evaluation.metadata["regions_over"].value == 1
    assert "DLG4_demo" in evaluation.metadata["examples"].value[0]


def test_an_ensembl_named_fasta_reports_every_naming_mismatch_in_the_first_run(demo_recipe, make_recipe, materialize,
                                                                                 tmp_path):
    # The recipe, the GTF and the VCF write 'chr1', the FASTA '1': one run names all three, before writing anything.
    fasta = tmp_path / "ensembl.fa"
    fasta.write_text(re.sub(r"^>chr", ">", demo_recipe.inputs.fasta.read_text(), flags=re.MULTILINE))
    recipe = make_recipe(inputs={"fasta": str(fasta)})
    with pytest.raises(InputError) as caught:
        materialize(recipe)
    message = str(caught.value)
    assert message.startswith(f"{fasta}: contig names: 3 contig naming mismatches with the FASTA: "
                              "(1) reference.chromosomes: the recipe names chromosomes differently from the FASTA")
    assert "(2) demo.gencode.gtf.gz: the GTF and the FASTA (ensembl.fa) name contigs differently" in message
    assert "(3) demo_cohort.vcf.gz: the VCF and the FASTA (ensembl.fa) name contigs differently" in message
    assert "Fix: rename the FASTA's contigs, one change that fixes all of them" in message
    assert not Warehouse(recipe.warehouse.root).table_file("reference_genome").exists()
