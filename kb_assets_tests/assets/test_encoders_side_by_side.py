"""Encoders side by side: a recipe with DNABERT-2 and two Caduceus checkpoints (PS, RC-equivariant; PH, averaged)
gets one asset set per encoder on the same gene set and cohort, and one comparison."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pytest
import torch

from kb_assets.definitions import build_definitions
from kb_assets.encoders.caduceus.checkpoint import write_caduceus_checkpoint
from kb_assets.encoders.families import load_any_encoder
from kb_assets.errors import InputError
from kb_assets.report.build import build_report, write_report
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import check_evaluations, metadata
from kb_assets_tests.conftest import materialize_on, write_recipe

GENES = ["SCN2A_demo", "CHD8_demo"]  # both on chr2


@pytest.fixture(scope="module")
def caduceus_checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("caduceus")
    return {name: str(write_caduceus_checkpoint(root / name, variant=variant, d_model=32, n_layer=2, seed=3,
                                                model_max_length=4096))
            for name, variant in (("caduceus_ps", "ps"), ("caduceus_ph", "ph"))}


@pytest.fixture(scope="module")
def side_by_side(demo_recipe, tmp_path_factory, caduceus_checkpoints):
    """The three encoders on the demo cohort and its brain table (few permutations: this is about the wiring)."""
    recipe = write_recipe(tmp_path_factory.mktemp("side_by_side"), demo_recipe, genes=GENES,
                          encoder={"dtype": "float32"}, pca={"n_components": 16},
                          inputs={"compare_with": caduceus_checkpoints, "brain": str(demo_recipe.inputs.brain)},
                          evaluation={"n_permutations": 19, "n_brain_components": 2})
    instance = dg.DagsterInstance.ephemeral()
    return recipe, materialize_on(instance)(recipe, partitions=None), instance


def catalog(recipe, query: str, parameters=()):
    with duckdb.connect(str(Warehouse(recipe.warehouse.root).catalog_path), read_only=True) as connection:
        return connection.execute(query, list(parameters)).df()


def test_each_encoder_has_its_own_assets_and_the_shared_stages_exist_once(caduceus_checkpoints, make_recipe):
    recipe = make_recipe("graph", genes=GENES, inputs={"compare_with": caduceus_checkpoints})
    keys = {key.to_user_string() for key in build_definitions(recipe).resolve_asset_graph().get_all_asset_keys()}
    for name in ("tokenized_genes", "gene_embeddings", "subject_matrix", "subject_embeddings_pca", "rc_stability",
                 "pooling_comparison", "bpe_token_report"):
        assert {name, f"caduceus_ps/{name}", f"caduceus_ph/{name}"} <= keys
    assert {"caduceus_ps/reference_sequences", "caduceus_ps/covariates"}.isdisjoint(keys)
    assert {"encoder_comparison", "inputs/caduceus_ps_checkpoint", "inputs/caduceus_ph_tokenizer"} <= keys


def test_side_by_side_end_to_end(side_by_side, caduceus_checkpoints):
    recipe, results, _ = side_by_side
    # What each encoder did, in its metadata: PS embeds one strand (equivariant), PH averages both.
    ps = metadata(results, "caduceus_ps/gene_embeddings", "chr2")
    ph = metadata(results, "caduceus_ph/gene_embeddings", "chr2")
    primary = metadata(results, "gene_embeddings", "chr2")
    assert (ps["rc_mode"], ps["rc_averaged"], ps["model_family"], ps["encoder"]) == (
        "equivariant", False, "caduceus", "caduceus_ps")
    assert (ph["rc_mode"], ph["rc_averaged"], ph["model_family"]) == ("average", True, "caduceus")
    assert (primary["rc_mode"], primary["model_family"], primary["encoder"]) == ("average", "dnabert2", "primary")
    assert ps["window_stride"] == 512 - 64  # no special tokens around a Caduceus window
    store = Warehouse(recipe.warehouse.root)
    strands = {name: set(store.read_partition(f"{prefix}tokenized_genes", "chr2",
                                              columns=["reverse_complement"]).column(0).to_pylist())
               for name, prefix in (("ps", "caduceus_ps/"), ("ph", "caduceus_ph/"), ("primary", ""))}
    assert strands == {"ps": {False}, "ph": {False, True}, "primary": {False, True}}

    # The PS model's RC invariance is checked through the model on mirrored windows, and holds.
    check = check_evaluations(results, "caduceus_ps/gene_embeddings")["rc_invariance"][-1]
    assert check.passed and check.metadata["rc_mode"].value == "equivariant"
    assert check.metadata["max_relative_difference"].value < 1e-5

    # Every encoder's view: one row per subject × gene (REF included), the same subjects.
    counts = {prefix: catalog(recipe, f"select subject_id, gene_name from {prefix}gene_embeddings")
              for prefix in ("", "caduceus_ps_", "caduceus_ph_")}
    assert len(counts[""]) == (220 + 1) * 2
    for frame in counts.values():
        assert frame.sort_values(["subject_id", "gene_name"]).reset_index(drop=True).equals(
            counts[""].sort_values(["subject_id", "gene_name"]).reset_index(drop=True))

    # Cohort outputs per encoder, each recording its encoder.
    for prefix, label in (("", "primary"), ("caduceus_ps/", "caduceus_ps")):
        facts = store.read_facts(f"{prefix}subject_embeddings_pca")
        assert facts["encoder"] == label
        assert facts["model_sha256"] == store.read_facts(f"{prefix}gene_embeddings/vectors", "chr2")["model_sha256"]
    assert (store.read_facts("caduceus_ps/subject_matrix")["model_sha256"]
            != store.read_facts("subject_matrix")["model_sha256"])


def test_caduceus_gene_vectors_equal_the_model_on_whole_exons(side_by_side, caduceus_checkpoints):
    """Oracle: the reference vector of each single-window exon is the mean of the PS model's per-base outputs on that
    exon with its tile context, the model called directly (no windows, cache or pooling code)."""
    recipe, _, _ = side_by_side
    store = Warehouse(recipe.warehouse.root)
    tiles = store.read_partition("caduceus_ps/tokenized_genes/tiles", "chr2").to_pandas().set_index("tile")
    allele_tiles = store.read_partition("caduceus_ps/tokenized_genes/allele_tiles", "chr2").to_pandas()
    alleles = store.read_partition("caduceus_ps/gene_embeddings/alleles", "chr2").to_pandas()
    encoder = load_any_encoder(caduceus_checkpoints["caduceus_ps"], device="cpu", dtype="float32")
    compared = 0
    for row in allele_tiles[allele_tiles["allele"] == 0].itertuples():
        if len(row.tiles) != 1 or len(tiles.at[row.tiles[0], "sequence"]) > 512:
            continue
        tile = tiles.loc[row.tiles[0]]
        ids = torch.tensor([encoder.tokenizer.encode(tile["sequence"])])
        with torch.inference_mode():
            hidden = encoder.model(ids, torch.ones_like(ids))[0].double().numpy()
        expected = hidden[tile["core_start"]:tile["core_end"]].mean(axis=0)
        stored = alleles[(alleles["region_id"] == row.region_id) & (alleles["allele"] == 0)]["vector"].iloc[0]
        np.testing.assert_allclose(np.asarray(stored, np.float64), expected, atol=1e-5, rtol=0)
        compared += 1
    assert compared >= 3


def test_the_comparison_table_and_plot(side_by_side):
    recipe, results, _ = side_by_side
    store = Warehouse(recipe.warehouse.root)
    genes = store.read_table("encoder_comparison").to_pandas()
    assert set(genes["encoder"]) == {"primary", "caduceus_ps", "caduceus_ph"}
    assert set(genes["gene_name"]) == set(GENES) and len(genes) == 3 * len(GENES)
    by_encoder = genes.set_index("encoder")
    # Caduceus-PS: forward and reverse complement embedded alone already agree; the others move.
    np.testing.assert_allclose(by_encoder.loc["caduceus_ps", "cosine_forward_rc"], 1.0, atol=1e-6)
    assert (by_encoder.loc["primary", "cosine_forward_rc"] < 0.9999).all()
    assert (by_encoder.loc["caduceus_ph", "cosine_forward_rc"] < 0.9999).all()
    # No [CLS] in Caduceus: its pooling comparison is mean vs max only.
    pooling = store.read_table("caduceus_ps/pooling_comparison").to_pandas()
    assert set(zip(pooling["strategy_a"], pooling["strategy_b"])) == {("mean", "max")}
    agreement = store.read_table("encoder_comparison/distance_agreement").to_pandas()
    assert len(agreement) == 3 * (len(GENES) + 1)
    overall = agreement[agreement["gene_id"] == "all genes"]
    analysed = store.read_table("subject_matrix").num_rows  # the analysis subjects, fewer than 500
    assert overall["spearman_rho"].between(-1, 1).all() and (overall["n_subjects"] == analysed).all()
    meta = metadata(results, "encoder_comparison")
    assert "comparison_plot" in meta and meta["n_subjects_compared"] == analysed


def test_gene_brain_results_side_by_side(side_by_side):
    recipe, results, _ = side_by_side
    store = Warehouse(recipe.warehouse.root)
    summary = store.read_table("gene_brain_alignment_by_encoder").to_pandas()
    assert summary.groupby("encoder", sort=False).size().to_dict() == {"primary": 5, "caduceus_ps": 5,
                                                                        "caduceus_ph": 5}
    for prefix, label in (("", "primary"), ("caduceus_ps/", "caduceus_ps")):
        canonical = store.read_table(f"{prefix}gene_brain_alignment").to_pandas().query("component == 1")
        mine = summary[summary["encoder"] == label]
        np.testing.assert_array_equal(mine["heldout_r1"].to_numpy(), canonical["heldout_r"].to_numpy())
        assert store.read_facts(f"{prefix}gene_brain_alignment")["encoder"] == label
    assert metadata(results, "gene_brain_alignment_by_encoder")["by_encoder"].startswith("![held-out")


def test_the_report_shows_each_encoder_the_comparison_and_the_evaluation(side_by_side, tmp_path):
    recipe, _, instance = side_by_side
    report = build_report(recipe, instance, build_definitions(recipe))
    sections = {section.anchor: section for section in report.sections}
    assert {"encoders", "evaluation"} <= set(sections)
    panels = {panel.title for section in report.sections for panel in section.panels}
    assert {"encoder_comparison", "gene_brain_alignment_by_encoder", "gene_brain_alignment",
            "caduceus_ps/gene_brain_alignment", "caduceus_ph/rc_stability",
            "caduceus_ps/gene_embeddings [chr2]"} <= panels
    assert {table.name for table in sections["evaluation"].tables} >= {"gene_brain_alignment",
                                                                       "caduceus_ps_gene_brain_alignment"}
    html = write_report(report, tmp_path / "report.html").read_text()
    assert "Encoders side by side" in html and "Gene–brain evaluation" in html


def test_encoder_names_and_paths_are_checked(make_recipe, caduceus_checkpoints, tmp_path):
    with pytest.raises(InputError, match="lowercase letters"):
        make_recipe("bad_name", genes=GENES, inputs={"compare_with": {"Caduceus-PS": caduceus_checkpoints[
            "caduceus_ps"]}})
    with pytest.raises(InputError, match="inputs.compare_with.missing"):
        make_recipe("missing", genes=GENES, inputs={"compare_with": {"missing": str(tmp_path / "nowhere")}})


def test_a_window_beyond_the_model_context_is_one_error(make_recipe, materialize, tmp_path):
    short = write_caduceus_checkpoint(tmp_path / "short", d_model=16, n_layer=1, model_max_length=256)
    recipe = make_recipe("short", genes=GENES, inputs={"compare_with": {"short": str(short)}})
    with pytest.raises(InputError, match=r"encoder\.window_tokens.*512 tokens exceed the context"):
        materialize(recipe, partitions=["chr2"])
    assert not Warehouse(recipe.warehouse.root).has_partition("short/tokenized_genes", "chr2")


def test_one_encoder_recipes_have_no_comparison(make_recipe):
    keys = build_definitions(make_recipe("one", genes=GENES)).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey("encoder_comparison") not in keys
