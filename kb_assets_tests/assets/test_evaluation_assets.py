"""The evaluation stage on the demo cohort: a planted gene–brain association (brain features driven by carriers of
variants in two genes) is found, held out, and attributed to those genes; without a brain table there is no stage."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from kb_assets.cli import run_summary
from kb_assets.definitions import build_definitions
from kb_assets.demo.brain import null_brain_table, planted_brain_table
from kb_assets.genome import ReferenceGenome, build_haplotypes, extract_regions, load_annotation, resolve_gene_set
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import metadata
from kb_assets_tests.conftest import materialize_on, write_recipe

PLANTED = ("SCN2A_demo", "CHD8_demo")  # both on chr2


def carriers(recipe, gene: str) -> set[str]:
    """Subjects carrying any applied variant in the gene's exons (straight from the domain functions)."""
    annotation = load_annotation(recipe.inputs.gtf)
    genome = ReferenceGenome(recipe.inputs.fasta)
    regions = extract_regions(genome, annotation, resolve_gene_set([gene], annotation), "chr2", "exons")
    haplotypes = build_haplotypes(recipe.inputs.vcf, regions, genome)
    indices = set(haplotypes.assignments["subject_index"])
    return set(haplotypes.subjects.loc[haplotypes.subjects["subject_index"].isin(indices), "subject_id"])


@pytest.fixture(scope="module")
def evaluated(demo_recipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluation")
    subjects = pd.read_csv(demo_recipe.inputs.covariates, sep="\t")["subject_id"].tolist()
    carried = [carriers(demo_recipe, gene) for gene in PLANTED]
    scores = np.array([[subject in genes for genes in carried] for subject in subjects], dtype=float)
    brain = folder / "brain.tsv"
    planted_brain_table(subjects, scores, n_features=12, n_affected=3, effect=1.0, seed=1).to_csv(
        brain, sep="\t", index=False)
    recipe = write_recipe(folder, demo_recipe, encoder={"dtype": "float32"}, pca={"n_components": 16},
                          inputs={"brain": str(brain)},
                          evaluation={"n_permutations": 99, "n_brain_components": 4})
    # A stored instance: what the run summary reads has been through Dagster's serialization.
    with dg.instance_for_test() as instance:
        yield recipe, materialize_on(instance)(recipe), instance


def test_the_planted_association_is_found_in_held_out_subjects(evaluated):
    recipe, results, _ = evaluated
    meta = metadata(results, "gene_brain_alignment")
    assert all(p < 0.05 for p in meta["p_value_r1_by_fold"])
    assert meta["heldout_r1_mean"] > 0.3
    assert meta["n_permutations"] == 99 and meta["blocks"] == ["site", "batch"]
    assert meta["model_sha256"] == metadata(results, "gene_embeddings", "chr2")["model_sha256"]
    assert meta["null_distribution"].startswith("![held-out first canonical correlation")


def test_attribution_points_at_the_planted_genes(evaluated):
    recipe, *_ = evaluated
    attribution = Warehouse(recipe.warehouse.root).read_table("gene_brain_alignment/attribution").to_pandas()
    mean_drop = attribution.groupby("gene_name")["delta_r1"].mean().sort_values(ascending=False)
    assert set(mean_drop.index[:2]) == set(PLANTED)
    assert (mean_drop[list(PLANTED)] > 0.05).all()


def test_the_run_summary_names_the_planted_genes_first(evaluated):
    recipe, results, instance = evaluated
    (line,) = [line for line in run_summary(recipe, instance, results) if line.startswith("Gene–brain alignment")]
    top = line.split("top genes by attribution: ")[1].split(", ")
    assert len(top) == 3 and set(top[:2]) == set(PLANTED)


def test_tables_name_folds_components_and_permutations(evaluated):
    recipe, *_ = evaluated
    store = Warehouse(recipe.warehouse.root)
    canonical = store.read_table("gene_brain_alignment").to_pandas()
    assert sorted(canonical["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (canonical.groupby("fold")["component"].max() == 3).all()
    assert (canonical["p_fwe"] >= canonical["p_value"] - 1e-12).all()  # family-wise never below the plain p
    null = store.read_table("gene_brain_alignment/null_distributions").to_pandas()
    assert null.groupby(["fold", "statistic", "component"]).size().eq(99).all()
    shares = store.read_table("gene_brain_alignment/gene_loadings").to_pandas()
    assert np.allclose(shares.groupby(["fold", "component"])["weight_share"].sum(), 1.0)


def test_a_recipe_without_a_brain_table_has_no_evaluation_stage(make_recipe):
    graph = build_definitions(make_recipe()).resolve_asset_graph()
    assert not {k.to_user_string() for k in graph.get_all_asset_keys()} & {"brain_features", "gene_brain_alignment"}


def test_brain_features_count_and_sample_the_subjects_left_out_and_list_them_whole_in_the_catalog(demo_recipe,
                                                                                                  tmp_path):
    """A brain table without four covariates subjects, with three subjects of its own, and 25 without a hippocampal
    volume (brain.missing: drop): the metadata holds counts and at most 20 ids (at cohort scale the ids are tens of
    thousands per event), the catalog lists every subject left out once, with why."""
    subjects = pd.read_csv(demo_recipe.inputs.covariates, sep="\t")["subject_id"].tolist()
    with_brain = subjects[4:] + ["EXTRA1", "EXTRA2", "EXTRA3"]
    table = null_brain_table(with_brain, n_features=4, seed=1)
    no_volume = with_brain[:25]
    table.loc[table["subject_id"].isin(no_volume), "idp_001"] = np.nan
    brain = tmp_path / "brain.tsv"
    table.to_csv(brain, sep="\t", index=False)
    recipe = write_recipe(tmp_path, demo_recipe, inputs={"brain": str(brain)}, evaluation={"missing": "drop"})
    job = build_definitions(recipe).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[dg.AssetKey("covariates"), dg.AssetKey("brain_features")],
                                    instance=dg.DagsterInstance.ephemeral())
    warehouse = Warehouse(recipe.warehouse.root)
    cohort = set(warehouse.read_table("covariates").column("subject_id").to_pylist())
    only_in_brain = set(with_brain) - cohort - set(no_volume)
    without_brain = cohort - set(with_brain)
    assert {"EXTRA1", "EXTRA2", "EXTRA3"} <= only_in_brain and without_brain
    meta = metadata([result], "brain_features")
    assert max(str(value).count("SUBJ") for value in meta.values()) <= 20  # demo ids are SUBJ0001 …
    assert meta["dropped_by_reason"] == {"missing idp_001": 25}
    assert meta["only_in_brain_table"] == len(only_in_brain)
    assert meta["covariates_subjects_without_brain_data"] == len(without_brain)
    assert [row["subject_id"] for row in meta["left_out_first_20"]] == no_volume[:20]
    with warehouse.catalog(read_only=True) as catalog:
        left_out = catalog.execute(f"select subject_id, reason from {meta['left_out_table']}").df()
    assert left_out["subject_id"].is_unique
    assert left_out.groupby("reason")["subject_id"].apply(set).to_dict() == {
        "missing idp_001": set(no_volume), "in the brain table without covariates": only_in_brain,
        "in the covariates table without brain data": without_brain}
