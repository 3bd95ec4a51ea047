"""The cohort half: covariates, folds, the subject matrix and the residualized PCA, on the demo cohort."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from kb_assets.assets.cohort import covariate_names, read_covariates
from kb_assets.definitions import build_definitions
from kb_assets.encoders import write_checkpoint
from kb_assets.errors import InputError
from kb_assets.stats import Projector, design_matrix
from kb_assets.storage import Warehouse, to_matrix
from kb_assets_tests.assets.helpers import metadata
from kb_assets_tests.conftest import SMALL_GENE_SET, materialize_on, write_recipe

SETTINGS = {"encoder": {"dtype": "float32"}, "pca": {"n_components": 16}}


@pytest.fixture(scope="module")
def built(demo_recipe, tmp_path_factory):
    """The whole graph on the small gene set, once for the module's read-only tests."""
    recipe = write_recipe(tmp_path_factory.mktemp("cohort"), demo_recipe, **SETTINGS)
    return recipe, materialize_on(dg.DagsterInstance.ephemeral())(recipe), Warehouse(recipe.warehouse.root)


def test_subject_matrix_concatenates_genes_in_manifest_order(built):
    recipe, results, warehouse = built
    matrix = np.load(warehouse.array_file("subject_matrix"))
    subjects = warehouse.read_table("subject_matrix").column("subject_id").to_pylist()
    hidden = 64
    assert matrix.shape == (len(subjects), len(SMALL_GENE_SET) * hidden)
    assert "REF" not in subjects
    covariate_subjects = set(warehouse.read_table("covariates").column("subject_id").to_pylist())
    assert set(subjects) == covariate_subjects

    subject = subjects[7]
    for position, gene in enumerate(SMALL_GENE_SET):
        chrom = {"SCN2A_demo": "chr2", "CHD8_demo": "chr2", "DLG4_demo": "chr1", "MECP2_demo": "chrX"}[gene]
        table = pq.read_table(warehouse.partition_file("gene_embeddings", chrom))
        keys = table.select(["subject_id", "gene_name"]).to_pandas()
        row = np.flatnonzero((keys["subject_id"] == subject) & (keys["gene_name"] == gene))[0]
        expected = to_matrix(table.column("vector"))[row]
        np.testing.assert_array_equal(matrix[7, position * hidden:(position + 1) * hidden], expected)
    assert metadata(results, "subject_matrix")["genes"] == SMALL_GENE_SET


def test_covariates_report_the_subjects_of_only_one_source(built):
    _, results, _ = built
    meta = metadata(results, "covariates")
    assert meta["intersection/n_only_in_vcf"] == 2 and meta["intersection/n_only_in_table"] == 2
    assert meta["n_subjects"] == 218


def test_every_subject_is_held_out_once_and_folds_are_group_disjoint(built):
    _, _, warehouse = built
    scores = warehouse.read_table("subject_embeddings_pca").to_pandas()
    heldout = scores[scores["split"] == "heldout"]
    assert heldout["subject_id"].is_unique
    assert len(heldout) == 218
    assert scores.groupby("fold").size().eq(218).all()
    folds = warehouse.read_table("cv_folds").to_pandas()
    assert folds.groupby("group")["fold"].nunique().eq(1).all()


def test_pca_metadata_and_saved_projectors_reproduce_the_scores(built):
    recipe, results, warehouse = built
    meta = metadata(results, "subject_embeddings_pca")
    assert meta["n_components"] == 16
    assert len(meta["explained_variance_ratio"]) == 16
    assert meta["covariates"][:3] == ["intercept", "age", "sex[M]"]
    assert "training subjects" in meta["fit_on"]
    assert meta["scree_plot"].startswith("![scree plot")

    matrix = np.load(warehouse.array_file("subject_matrix"), mmap_mode="r")
    subjects = warehouse.read_table("subject_matrix").column("subject_id").to_pylist()
    frame = read_covariates(warehouse).set_index("subject_id").loc[subjects].reset_index()
    design, _ = design_matrix(frame, covariate_names(frame))
    scores = warehouse.read_table("subject_embeddings_pca").to_pandas()
    held_out = scores[(scores["fold"] == 2) & (scores["split"] == "heldout")]
    rows = np.array([subjects.index(s) for s in held_out["subject_id"]])
    projector = Projector.load(meta["projectors"]["2"])
    again = projector.transform(matrix, design[rows], rows=rows)
    pcs = held_out[[f"pc_{i}" for i in range(1, 17)]].to_numpy()
    np.testing.assert_allclose(again, pcs, rtol=1e-5, atol=1e-5)


def test_subject_matrix_refuses_vectors_of_two_models(make_recipe, materialize, tmp_path):
    recipe = make_recipe(**SETTINGS)
    materialize(recipe)
    other_model = tmp_path / "other-checkpoint"
    tokenizer = Tokenizer.from_file(str(recipe.inputs.checkpoint / "tokenizer.json"))
    write_checkpoint(other_model, tokenizer, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, seed=99)
    swapped = make_recipe("swapped", **SETTINGS, inputs={"checkpoint": str(other_model)},
                          warehouse={"root": str(recipe.warehouse.root)})
    materialize(swapped, partitions=["chr2"])
    job = build_definitions(swapped).resolve_implicit_global_asset_job_def()
    with pytest.raises(InputError, match=r"model_sha256.*re-materialize gene_embeddings for chr1, chrX"):
        job.execute_in_process(asset_selection=[dg.AssetKey("subject_matrix")], instance=materialize.instance)
