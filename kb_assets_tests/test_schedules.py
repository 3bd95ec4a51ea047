"""The schedule's run requests, the input sensor's change detection, and the cohort's automation condition."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import dagster as dg
import pytest

from kb_assets.definitions import build_definitions
from kb_assets.resources import WarehouseResource


def _sensor_requests(defs: dg.Definitions, recipe) -> list[dg.RunRequest]:
    sensor = defs.resolve_sensor_def("input_changes")
    context = dg.build_sensor_context(repository_def=defs.get_repository_def(),
                                      resources={"warehouse": WarehouseResource(root=str(recipe.warehouse.root))})
    result = sensor.evaluate_tick(context)
    return list(result.run_requests or [])


def test_schedule_requests_one_run_per_chromosome(make_recipe):
    defs = build_definitions(make_recipe())
    schedule = defs.resolve_schedule_def("chromosome_refresh")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 2 * * 0"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 29, 2, tzinfo=timezone.utc),
                                        repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["chr1", "chr2", "chrX"]
    assert len({r.run_key for r in requests}) == 3
    assert schedule.job_name == "chromosome_embeddings"
    job = defs.resolve_job_def("chromosome_embeddings")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "reference_sequences", "subject_haplotypes", "tokenized_genes", "gene_embeddings"}


@pytest.fixture
def built(make_recipe, materialize):
    recipe = make_recipe(encoder={"dtype": "float32"}, pca={"n_components": 8})
    materialize(recipe)
    return recipe, build_definitions(recipe)


def test_unchanged_and_touched_inputs_request_nothing(built):
    recipe, defs = built
    assert _sensor_requests(defs, recipe) == []
    os.utime(recipe.inputs.vcf)  # same bytes, new mtime
    os.utime(recipe.inputs.gene_set)
    assert _sensor_requests(defs, recipe) == []


def test_changed_covariates_request_only_the_covariates(built):
    recipe, defs = built
    assert _sensor_requests(defs, recipe) == []
    path = recipe.inputs.covariates
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one subject fewer
    requests = _sensor_requests(defs, recipe)
    assert len(requests) == 1
    assert requests[0].asset_selection == [dg.AssetKey("covariates")]
    assert requests[0].partition_key is None
    assert "input covariates changed" in requests[0].tags["kb_assets/reason"]


def test_a_changed_gene_set_reaches_only_the_partitions_it_changes(built, materialize):
    recipe, defs = built
    manifest = recipe.inputs.gene_set
    # The last gene (so no other gene's position changes), on chr2 beside SCN2A_demo.
    manifest.write_text(manifest.read_text().replace("CHD8_demo\n", ""))
    requests = _sensor_requests(defs, recipe)
    assert [(r.asset_selection, r.partition_key) for r in requests] == [([dg.AssetKey("gene_set")], None)]

    job = defs.resolve_implicit_global_asset_job_def()
    job.execute_in_process(asset_selection=[dg.AssetKey("gene_set")], instance=materialize.instance)
    requests = _sensor_requests(defs, recipe)
    # Every partition read the old gene set, so each re-extracts its regions (cheap) ...
    assert sorted(r.partition_key for r in requests) == ["chr1", "chr2", "chrX"]
    assert all(r.asset_selection == [dg.AssetKey("reference_sequences")] for r in requests)
    for chrom in ("chr1", "chr2", "chrX"):
        job.execute_in_process(asset_selection=[dg.AssetKey("reference_sequences")], partition_key=chrom,
                               instance=materialize.instance)
    # ... but only chr2's regions changed, so only chr2 goes on to new haplotypes.
    requests = _sensor_requests(defs, recipe)
    assert [(r.asset_selection, r.partition_key) for r in requests] == [([dg.AssetKey("subject_haplotypes")], "chr2")]


def test_cohort_follows_only_new_embedding_data(built, materialize):
    recipe, defs = built
    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=materialize.instance)
    assert evaluated.total_requested == 0
    job = defs.resolve_implicit_global_asset_job_def()
    # Re-running a partition with nothing changed writes identical data: nothing downstream is requested.
    job.execute_in_process(asset_selection=[dg.AssetKey("gene_embeddings")], partition_key="chr2",
                           instance=materialize.instance)
    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=materialize.instance,
                                                  cursor=evaluated.cursor)
    assert evaluated.total_requested == 0
