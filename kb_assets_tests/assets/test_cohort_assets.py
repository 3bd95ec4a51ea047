"""The cohort half: covariates, folds, the subject matrix and the residualized PCA, on the demo cohort."""

from __future__ import annotations

import gzip
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

from kb_assets.assets.cohort import read_covariates, read_subject_matrix
from kb_assets.cli import run_summary
from kb_assets.definitions import build_definitions
from kb_assets.encoders import write_checkpoint
from kb_assets.errors import InputError
from kb_assets.stats import ResidualizedPCA
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import metadata
from kb_assets_tests.conftest import SMALL_GENE_SET, materialize_on, write_recipe
from kb_assets_tests.reliability.conftest import bgzip_vcf

SETTINGS = {"encoder": {"dtype": "float32"}, "pca": {"n_components": 16}}


@pytest.fixture(scope="module")
def built(demo_recipe, tmp_path_factory):
    """The whole graph on the small gene set, once for the module's read-only tests."""
    recipe = write_recipe(tmp_path_factory.mktemp("cohort"), demo_recipe, **SETTINGS)
    return recipe, materialize_on(dg.DagsterInstance.ephemeral())(recipe), Warehouse(recipe.warehouse.root)


def gene_view(warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.catalog(read_only=True) as catalog:
        return catalog.execute("select subject_id, gene_name, vector from gene_embeddings").df()


def test_subject_matrix_concatenates_genes_in_manifest_order(built):
    recipe, results, warehouse = built
    subjects, matrix = read_subject_matrix(warehouse, "concat")
    hidden = 64
    assert matrix.shape == (len(subjects), len(SMALL_GENE_SET) * hidden)
    assert "REF" not in subjects
    covariate_subjects = set(warehouse.read_table("covariates").column("subject_id").to_pylist())
    assert set(subjects) == covariate_subjects
    # Row by row, the factored matrix is the gene vectors the view lists, concatenated in manifest order.
    view = gene_view(warehouse).set_index(["subject_id", "gene_name"])["vector"]
    rows = np.arange(0, len(subjects), 17)
    dense = matrix.dense_rows(rows)
    for row in rows:
        expected = np.concatenate([view[(subjects[row], gene)] for gene in SMALL_GENE_SET])
        np.testing.assert_array_equal(dense[list(rows).index(row)], expected.astype(np.float32))
    meta = metadata(results, "subject_matrix")
    assert meta["genes"] == SMALL_GENE_SET and meta["shape"] == [len(subjects), len(SMALL_GENE_SET) * hidden]
    # What is stored follows what subjects do not share: far fewer vectors than subjects × genes.
    assert meta["stored_vectors"] < len(subjects) * len(SMALL_GENE_SET) / 4


def test_covariates_report_the_subjects_of_only_one_source(built):
    _, results, _ = built
    meta = metadata(results, "covariates")
    assert meta["intersection/n_only_in_vcf"] == 2 and meta["intersection/n_only_in_table"] == 2
    assert meta["n_subjects"] == 218


def test_left_out_subjects_are_counted_and_sampled_in_metadata_and_listed_whole_in_the_catalog(demo_recipe, tmp_path):
    """Thirty subjects without an age, dropped (covariates.missing: drop), beside the demo's two subjects only in
    the VCF and two only in the covariates table: the metadata holds counts and at most 20 ids (at cohort scale
    the ids are tens of thousands per event), the catalog lists every one once, and the run summary counts each
    subject left out once."""
    frame = pd.read_csv(demo_recipe.inputs.covariates, sep="\t", dtype=str)
    no_age = frame["subject_id"].iloc[:30].tolist()
    frame.loc[frame["subject_id"].isin(no_age), "age"] = ""
    covariates = tmp_path / "covariates.tsv"
    frame.to_csv(covariates, sep="\t", index=False)
    recipe = write_recipe(tmp_path, demo_recipe, inputs={"covariates": str(covariates)}, covariates={"missing": "drop"})
    with dg.instance_for_test() as instance:
        job = build_definitions(recipe).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(asset_selection=[dg.AssetKey("covariates")], instance=instance)
        summary = run_summary(recipe, instance, [result])
    assert (f"Subjects: {len(frame) - 32} analysed; left out: 2 in the VCF without covariates, 2 in the covariates "
            "table without genotypes, 30 with missing covariate values (covariates.missing)") in summary
    meta = metadata([result], "covariates")
    assert max(str(value).count("SUBJ") for value in meta.values()) <= 20  # demo ids are SUBJ0001 …
    assert meta["dropped_by_reason"] == {"missing age": 30}
    assert meta["intersection/n_only_in_vcf"] == 2 and meta["intersection/n_only_in_table"] == 2
    assert [row["subject_id"] for row in meta["left_out_first_20"]] == no_age[:20]
    with Warehouse(recipe.warehouse.root).catalog(read_only=True) as catalog:
        left_out = catalog.execute(f"select subject_id, reason from {meta['left_out_table']}").df()
    assert left_out["subject_id"].is_unique and len(left_out) == 34
    assert set(left_out.loc[left_out["reason"] == "missing age", "subject_id"]) == set(no_age)


def test_every_subject_is_held_out_once_and_folds_are_group_disjoint(built):
    _, _, warehouse = built
    scores = warehouse.read_table("subject_embeddings_pca").to_pandas()
    heldout = scores[scores["split"] == "heldout"]
    assert heldout["subject_id"].is_unique
    assert len(heldout) == 218
    assert scores.groupby("fold").size().eq(218).all()
    # Each fold's own number of components, never padded.
    assert (scores["embedding"].map(len) == scores["n_components"]).all()
    folds = warehouse.read_table("cv_folds").to_pandas()
    assert folds.groupby("group")["fold"].nunique().eq(1).all()


def test_pca_metadata_and_saved_models_reproduce_the_scores(built):
    recipe, results, warehouse = built
    meta = metadata(results, "subject_embeddings_pca")
    assert meta["n_components_per_fold"] == {str(f): 16 for f in range(5)}
    assert set(meta["n_components_reason"].values()) == {"requested"}
    assert meta["captured_variance_vs_exact"] >= 0.999
    assert meta["covariates"][:3] == ["age", "sex", "pc1"] and meta["scale"] == "none"
    assert "training subjects" in meta["fit_on"]
    assert meta["scree_plot"].startswith("![scree plot")

    subjects, matrix = read_subject_matrix(warehouse, "concat")
    frame = read_covariates(warehouse).set_index("subject_id").loc[subjects].reset_index()
    scores = warehouse.read_table("subject_embeddings_pca").to_pandas()
    held_out = scores[(scores["fold"] == 2) & (scores["split"] == "heldout")]
    rows = np.array([subjects.index(s) for s in held_out["subject_id"]])
    folds = warehouse.read_table("subject_embeddings_pca/folds").to_pandas().set_index("fold")
    model = ResidualizedPCA.load(folds.loc[2, "model"])
    coder = CovariateCoder.from_json(ResidualizedPCA.saved_coder_json(folds.loc[2, "model"]))
    again = model.transform(matrix.take_rows(rows), coder.transform(frame.iloc[rows]))
    np.testing.assert_allclose(again, np.stack(held_out["embedding"]), rtol=1e-5, atol=1e-5)


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


EXCLUDE = {"haplotypes": {"missing_genotypes": "exclude_subject"}}


def test_subjects_excluded_for_missing_calls_are_counted_in_the_matrix_and_the_run_summary(demo_recipe, tmp_path):
    """missing_genotypes: exclude_subject on the demo VCF, whose missing calls leave some subjects out: the run
    summary's headline counts the subjects the subject matrix holds, and names the exclusions among those left out
    (it said "218 analysed" while the matrix held fewer)."""
    recipe = write_recipe(tmp_path, demo_recipe, **SETTINGS, **EXCLUDE)
    with dg.instance_for_test() as instance:
        results = materialize_on(instance)(recipe)
        summary = run_summary(recipe, instance, results)
    meta = metadata(results, "subject_matrix")
    analysed = meta["shape"][0]
    assert analysed < 218 and summary[0].startswith(f"Subjects: {analysed} analysed; ")
    excluded = meta["excluded_for_missing_genotypes"]
    assert analysed == 218 - excluded
    assert summary[0] == (f"Subjects: {analysed} analysed; left out: 2 in the VCF without covariates, 2 in the "
                          "covariates table without genotypes, 0 with missing covariate values (covariates.missing), "
                          f"{excluded} with a missing genotype call (haplotypes.missing_genotypes: exclude_subject)")
    assert not any("without gene vectors on every chromosome" in line for line in summary)
    # The same subjects subject_haplotypes flags, per chromosome, among the covariates subjects.
    warehouse = Warehouse(recipe.warehouse.root)
    with warehouse.catalog(read_only=True) as catalog:
        flagged = catalog.execute(
            f"select chrom, subject_id from {meta['excluded_subjects_table']} where excluded and subject_id in "
            "(select subject_id from covariates)").df()
    assert meta["excluded_by_chromosome"] == flagged.groupby("chrom").size().reindex(
        recipe.reference.chromosomes, fill_value=0).to_dict()
    assert flagged["subject_id"].nunique() == excluded
    assert set(meta["excluded_first_20"]) <= set(flagged["subject_id"]) and len(meta["excluded_first_20"]) == 20
    assert len(read_subject_matrix(warehouse, "concat")[0]) == analysed


def test_exclusions_that_leave_too_few_subjects_stop_at_the_subject_matrix(demo_recipe, tmp_path):
    """A VCF where all but five samples have missing calls, with exclude_subject: one error from the subject matrix
    (not the PCA's "too few subjects"), naming the VCF and the setting, how many were excluded per chromosome, and
    the fix; no subject matrix is written."""
    lines = gzip.open(demo_recipe.inputs.vcf, "rt").read().splitlines()
    missing = [line if line.startswith("#") else "\t".join([*line.split("\t")[:14], *(
        "./." for _ in line.split("\t")[14:])]) for line in lines]
    vcf = bgzip_vcf("\n".join(missing) + "\n", tmp_path / "missing.vcf.gz")
    recipe = write_recipe(tmp_path, demo_recipe, **SETTINGS, **EXCLUDE, inputs={"vcf": str(vcf)})
    with pytest.raises(InputError) as caught:
        materialize_on(dg.DagsterInstance.ephemeral())(recipe)
    message = str(caught.value)
    assert re.fullmatch(
        re.escape(f"{vcf}: haplotypes.missing_genotypes: exclude_subject: ") + r"(\d+) of 218 subjects were excluded "
        r"for a missing genotype call \(by chromosome: chr1 \d+, chr2 \1, chrX \d+\), and the \d left cannot fill the "
        r"folds and fit the PCA \(fold \d keeps no .*\)\. Fix: set haplotypes.missing_genotypes: ref \(a missing call "
        r"reads as the reference allele\), or filter or impute the VCF's missing calls", message), message
    assert not Warehouse(recipe.warehouse.root).dataset_dir("subject_matrix").exists()
