"""subject_haplotypes through Dagster on the demo inputs: what its materialization says about the subjects."""

from __future__ import annotations

import dagster as dg

from kb_assets.definitions import build_definitions
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import metadata
from kb_assets_tests.conftest import write_recipe


def test_excluded_subjects_are_counted_and_sampled_in_metadata_and_flagged_whole_in_the_catalog(demo_recipe,
                                                                                               tmp_path):
    """With missing_genotypes: exclude_subject, every demo subject with a missing call in a used record is left
    out: more than 20 on chr2. The metadata counts them and quotes at most 20 ids (at cohort scale the ids are
    tens of thousands per event); the subjects table it names flags every one."""
    recipe = write_recipe(tmp_path, demo_recipe, haplotypes={"missing_genotypes": "exclude_subject"})
    job = build_definitions(recipe).resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    job.execute_in_process(asset_selection=[dg.AssetKey(name) for name in
                                            ("reference_genome", "gene_annotations", "gene_set")], instance=instance)
    result = job.execute_in_process(asset_selection=[dg.AssetKey("reference_sequences"),
                                                     dg.AssetKey("subject_haplotypes")],
                                    partition_key="chr2", instance=instance)
    meta = metadata([result], "subject_haplotypes", "chr2")
    assert meta["counts/subjects_excluded"] > 20
    assert max(str(value).count("SUBJ") for value in meta.values()) <= 20  # demo ids are SUBJ0001 …
    with Warehouse(recipe.warehouse.root).catalog(read_only=True) as catalog:
        excluded = [row[0] for row in catalog.execute(
            f"select subject_id from {meta['excluded_subjects_table']} where excluded and chrom = 'chr2' "
            "order by subject_index").fetchall()]
    assert len(excluded) == meta["counts/subjects_excluded"]
    assert meta["excluded_subjects_first_20"] == excluded[:20]
