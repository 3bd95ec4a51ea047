"""rc_stability, pooling_comparison and bpe_token_report on the demo inputs (small gene set): their tables, the
model they name, vectors that are the pipeline's own, no forward pass on a rerun, and the cohort cap."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kb_assets.assets.diagnostics import MAX_COHORT_SUBJECTS, build_diagnostic_assets
from kb_assets.assets.encoders import recipe_encoders
from kb_assets.definitions import build_definitions, build_resources
from kb_assets.diagnostics import gene_table, pool_regions, reference_stats
from kb_assets.encoders import chromosome as chromosome_module
from kb_assets.encoders import engine as engine_module
from kb_assets.encoders.chromosome import embedding_key
from kb_assets.encoders.identity import checkpoint_identity
from kb_assets.storage import EmbeddingCache, Warehouse
from kb_assets_tests.assets.helpers import metadata
from kb_assets_tests.conftest import SMALL_GENE_SET, materialize_on, write_recipe

DIAGNOSTICS = ("rc_stability", "pooling_comparison", "bpe_token_report")
CHROMOSOMES = ("chr1", "chr2", "chrX")
N_SUBJECTS = 220


@pytest.fixture(scope="module")
def built(demo_recipe, tmp_path_factory):
    """The whole graph on the small gene set, once for the module."""
    recipe = write_recipe(tmp_path_factory.mktemp("diagnostics"), demo_recipe, encoder={"dtype": "float32"})
    return recipe, materialize_on(dg.DagsterInstance.ephemeral())(recipe), Warehouse(recipe.warehouse.root)


def reference_regions(warehouse: Warehouse) -> pd.DataFrame:
    return pd.concat([pq.read_table(warehouse.partition_file("reference_sequences", c)).to_pandas()
                      for c in CHROMOSOMES], ignore_index=True)


def catalog(warehouse: Warehouse, sql: str) -> pd.DataFrame:
    with warehouse.catalog(read_only=True) as connection:
        return connection.execute(sql).df()


def test_diagnostics_are_their_own_group_downstream_of_what_they_read(demo_recipe):
    defs = build_definitions(demo_recipe)
    graph = defs.resolve_asset_graph()
    for name in DIAGNOSTICS:
        assert graph.get(dg.AssetKey(name)).group_name == "diagnostics"
        assert graph.get(dg.AssetKey(name)).partitions_def is None
    parents = {name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys} for name in DIAGNOSTICS}
    assert parents["rc_stability"] == {"reference_sequences", "tokenized_genes", "gene_embeddings",
                                       "inputs/checkpoint"}
    assert parents["pooling_comparison"] == {"reference_sequences", "subject_haplotypes", "tokenized_genes",
                                             "gene_embeddings", "inputs/checkpoint"}
    assert parents["bpe_token_report"] == {"gene_annotations", "gene_set", "inputs/tokenizer"}
    assert defs.resolve_assets_def("rc_stability").op.pool == "gpu"
    assert defs.resolve_assets_def("pooling_comparison").op.pool == "gpu"
    assert defs.resolve_assets_def("bpe_token_report").op.pool is None  # tokenizer only, no model


def test_tables_are_in_the_catalog(built):
    _, _, warehouse = built
    regions = reference_regions(warehouse)
    counts = {view: len(catalog(warehouse, f"select * from {view}")) for view in (
        "rc_stability", "rc_stability_regions", "pooling_comparison", "pooling_comparison_half_split",
        "pooling_comparison_distance_agreement", "bpe_token_report_region_types", "bpe_token_report_codon_frame")}
    genes = len(SMALL_GENE_SET)
    assert counts == {
        "rc_stability": genes, "rc_stability_regions": len(regions), "pooling_comparison": genes * 3,
        "pooling_comparison_half_split": genes * 3, "pooling_comparison_distance_agreement": 3,
        "bpe_token_report_region_types": 5, "bpe_token_report_codon_frame": 1,
    }
    rc = catalog(warehouse, "select * from rc_stability")
    assert rc["gene_name"].tolist() == SMALL_GENE_SET  # gene-set order
    assert set(rc["moved_rank"]) == set(range(1, genes + 1))
    assert rc[["cosine_forward_rc", "cosine_forward_average"]].apply(lambda c: c.between(-1, 1)).all().all()
    summary = catalog(warehouse, "select * from rc_stability_summary where grouping = 'chromosome'")
    assert sorted(summary["group"]) == list(CHROMOSOMES)
    half = catalog(warehouse, "select * from pooling_comparison_half_split")
    assert (half.loc[half["n_tiles"] == 1, "half_split_cosine"] == 1.0).all()
    assert (half["n_tiles"] > 1).any()
    agreement = catalog(warehouse, "select * from pooling_comparison_distance_agreement")
    assert agreement["n_subjects"].tolist() == [N_SUBJECTS] * 3
    assert agreement["n_pairs"].tolist() == [N_SUBJECTS * (N_SUBJECTS - 1) // 2] * 3
    assert agreement["spearman_rho"].between(-1, 1).all()


def test_each_diagnostic_names_the_model_and_tokenizer_it_read(built):
    _, results, _ = built
    embeddings = metadata(results, "gene_embeddings", "chr1")
    for name in DIAGNOSTICS:
        meta = metadata(results, name)
        assert meta["tokenizer_version"] == embeddings["tokenizer_version"], name
        assert meta["model_sha256"] == embeddings["model_sha256"], name
        assert meta["reference_version"] == embeddings["reference_version"], name
    rc, pooling = metadata(results, "rc_stability"), metadata(results, "pooling_comparison")
    for meta in (rc, pooling):
        assert meta["window_tokens"] == 512 and meta["dtype"] == "float32"
        assert meta["region_to_gene"] == embeddings["region_to_gene"]
    assert "data:image/png;base64," in rc["cosine_histogram"]
    assert "data:image/png;base64," in pooling["rank_agreement_plot"]
    assert pooling["max_subjects"] == MAX_COHORT_SUBJECTS and pooling["n_subjects_compared"] == N_SUBJECTS
    assert pooling["subjects"] == f"the first {N_SUBJECTS} of {N_SUBJECTS} cohort subjects by id"
    bpe = metadata(results, "bpe_token_report")
    assert set(bpe["bp_per_token"]) == {"exon", "utr", "cds", "intron", "promoter"}
    assert bpe["cds_token_boundaries"] > 0 and 0 <= bpe["codon_boundary_share"] <= 1
    assert "data:image/png;base64," in bpe["token_length_plot"]


def test_rc_average_is_the_gene_embeddings_reference_vector(built):
    """The vectors the diagnostics compared are the pipeline's: averaging the cached strands and pooling the
    regions as the recipe does gives gene_embeddings' REF vectors. Read from the cache alone: no model."""
    recipe, _, warehouse = built
    identity = checkpoint_identity(recipe.inputs.checkpoint, dtype="float32")
    cache = EmbeddingCache(warehouse, embedding_key(identity, recipe.encoder))

    def no_model(missing):
        raise AssertionError("the diagnostics left windows uncached")

    with warehouse.catalog(read_only=True) as connection:
        view = connection.execute("select gene_name, vector from gene_embeddings where subject_id = 'REF'").df()
    stored = view.set_index("gene_name")["vector"]
    for chrom in CHROMOSOMES:
        regions = warehouse.read_partition("reference_sequences", chrom).to_pandas()
        reference, embedded = reference_stats(
            regions, warehouse.read_partition("tokenized_genes/tiles", chrom).to_pandas(),
            warehouse.read_partition("tokenized_genes/allele_tiles", chrom).to_pandas(), identity.tokenizer, cache,
            no_model, identity.hidden_size, recipe.encoder.window_tokens, recipe.encoder.window_overlap)
        assert embedded == 0
        genes = pool_regions(regions, reference.vectors("mean", "average"), recipe.aggregation.region_to_gene)
        expected = np.stack([stored[name] for name in gene_table(regions)["gene_name"]])
        np.testing.assert_allclose(genes, expected, atol=1e-5, rtol=0)


def test_exon_token_counts_are_the_embedded_regions_tokens(built):
    recipe, _, warehouse = built
    regions = reference_regions(warehouse)  # the recipe's region mode is exons: the same regions, tokenized alike
    tokenizer = checkpoint_identity(recipe.inputs.checkpoint).tokenizer
    exon = catalog(warehouse, "select * from bpe_token_report_region_types where region_type = 'exon'").iloc[0]
    assert exon["n_regions"] == len(regions) and exon["bp"] == regions["length"].sum()
    assert exon["tokens"] == sum(len(tokenizer.encode(s)) for s in regions["sequence"])
    tokens = catalog(warehouse, "select * from bpe_token_report")
    assert tokens["count_exon"].sum() == exon["tokens"]
    assert tokens["q_value"].between(0, 1).all() and (tokens["q_value"] >= tokens["p_value"] - 1e-12).all()


def test_a_rerun_with_nothing_changed_runs_no_forward_pass(built, monkeypatch):
    recipe, _, warehouse = built
    before = {name: pq.read_table(warehouse.table_file(name)) for name in ("rc_stability", "pooling_comparison")}

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran although every window was cached")

    monkeypatch.setattr(engine_module, "run_windows", forbidden)
    monkeypatch.setattr(chromosome_module, "run_windows", forbidden)
    results = materialize_on(dg.DagsterInstance.ephemeral())(recipe)
    for name in ("rc_stability", "pooling_comparison"):
        assert metadata(results, name)["embedded_windows"] == 0
        assert pq.read_table(warehouse.table_file(name)).equals(before[name])


def test_the_cohort_part_takes_the_first_subjects_by_id(built):
    recipe, _, warehouse = built
    capped = build_diagnostic_assets(recipe, recipe_encoders(recipe), max_subjects=7)[1]
    result = dg.materialize([capped], resources=build_resources(recipe), instance=dg.DagsterInstance.ephemeral())
    meta = {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(
        "pooling_comparison")[0].metadata.items()}
    assert meta["max_subjects"] == 7 and meta["n_subjects_compared"] == 7 and meta["subjects_eligible"] == N_SUBJECTS
    agreement = pq.read_table(warehouse.table_file("pooling_comparison/distance_agreement")).to_pandas()
    assert agreement["n_subjects"].tolist() == [7] * 3 and agreement["n_pairs"].tolist() == [21] * 3
