"""Automation with Dagster's own data versions: input files observed as source assets, staleness as Dagster sees it,
and the automation conditions that carry a change down the graph and stop where an output is unchanged."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._time import get_current_datetime

from kb_assets.definitions import build_definitions
from kb_assets_tests.conftest import materialized_with_own_covariates


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


def test_sensors_and_their_default_status(make_recipe):
    defs = build_definitions(make_recipe())
    statuses = {name: defs.resolve_sensor_def(name).default_status
                for name in ("observe_inputs", "follow_inputs", "cohort_follows_embeddings")}
    assert statuses == {"observe_inputs": dg.DefaultSensorStatus.RUNNING,
                        "follow_inputs": dg.DefaultSensorStatus.STOPPED,
                        "cohort_follows_embeddings": dg.DefaultSensorStatus.RUNNING}
    graph = defs.resolve_asset_graph()
    inputs = {k.to_user_string() for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable}
    assert inputs == {f"inputs/{name}" for name in ("fasta", "gtf", "gene_set", "vcf", "covariates", "checkpoint",
                                                    "tokenizer")}


class Automation:
    """Evaluates the materializable assets' automation conditions as the sensors would, tick after tick."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None
        graph = defs.resolve_asset_graph()
        self.selection = dg.AssetSelection.assets(*graph.materializable_asset_keys)

    def requested(self) -> set[tuple[str, str | None]]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                   asset_selection=self.selection)
        self.cursor = result.cursor
        return {(r.key.to_user_string(), partition) for r in result.results
                for partition in (r.true_subset.expensively_compute_partition_keys()
                                  if r.true_subset.is_partitioned else [None] if r.true_subset.size else [])}

    def observe(self) -> None:
        self.defs.resolve_job_def("observe_inputs").execute_in_process(instance=self.instance)

    def run(self, asset: str, *partitions: str | None) -> None:
        job = self.defs.resolve_implicit_global_asset_job_def()
        for partition in partitions or (None,):
            job.execute_in_process(asset_selection=[dg.AssetKey(asset)], partition_key=partition,
                                   instance=self.instance)


def stale(defs: dg.Definitions, instance: dg.DagsterInstance) -> set[tuple[str, str | None]]:
    """What the Dagster UI marks stale (its own resolver)."""
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return {(key.to_user_string(), partition) for key in graph.materializable_asset_keys
            for partition in (graph.get(key).partitions_def.get_partition_keys() if graph.get(key).partitions_def
                              else [None])
            if resolver.get_status(key, partition).value == "STALE"}


@pytest.fixture(scope="module")
def built(demo_recipe, tmp_path_factory):
    """The small gene set materialized once for the module (its own copy of the gene set and covariates)."""
    recipe, materialize = materialized_with_own_covariates(tmp_path_factory.mktemp("automation"), demo_recipe)
    defs = build_definitions(recipe)
    automation = Automation(defs, materialize.instance)
    assert automation.requested() == set()
    return recipe, defs, automation


def test_touched_files_change_nothing_and_changed_covariates_reach_the_cohort_only(built):
    recipe, defs, automation = built
    os.utime(recipe.inputs.vcf)  # same bytes, new mtime
    os.utime(recipe.inputs.gene_set)
    automation.observe()
    assert automation.requested() == set() and stale(defs, automation.instance) == set()
    lines = recipe.inputs.covariates.read_text().splitlines()
    recipe.inputs.covariates.write_text("\n".join(lines[:-1]) + "\n")  # one subject fewer
    automation.observe()
    assert stale(defs, automation.instance) == {("covariates", None)}
    assert automation.requested() == {("covariates", None)}
    automation.run("covariates")
    following = automation.requested()
    assert {("cv_folds", None), ("subject_matrix", None)} <= following
    assert all(partition is None for _, partition in following)  # nothing upstream of the cohort runs


def test_a_changed_gene_set_reaches_only_the_partitions_it_changes(built):
    recipe, defs, automation = built
    manifest = recipe.inputs.gene_set
    # The last gene (so no other gene's position changes), on chr2 beside SCN2A_demo.
    manifest.write_text(manifest.read_text().replace("CHD8_demo\n", ""))
    automation.observe()
    # Dagster marks what read the changed file; each step then marks what read a changed output.
    assert stale(defs, automation.instance) >= {("gene_set", None)}
    assert ("gene_set", None) in automation.requested()
    automation.run("gene_set")
    # Every partition read the old gene set, so each re-extracts its regions (cheap) ...
    assert {("reference_sequences", c) for c in ("chr1", "chr2", "chrX")} <= automation.requested()
    automation.run("reference_sequences", "chr1", "chr2", "chrX")
    # ... but only chr2's regions changed, so only chr2 goes on (its haplotypes, and its embeddings, which read
    # the regions too; one run executes them in order).
    following = {(a, p) for a, p in automation.requested() if p}
    assert ("subject_haplotypes", "chr2") in following and {p for _, p in following} == {"chr2"}
    assert ("subject_haplotypes", "chr1") not in stale(defs, automation.instance)


def test_input_observations_run_every_minute(built):
    _, defs, automation = built
    sources = dg.AssetSelection.assets(*(k for k in defs.resolve_asset_graph().get_all_asset_keys()
                                         if k.path[0] == "inputs"))
    now = datetime.now(timezone.utc)
    first = dg.evaluate_automation_conditions(defs=defs, instance=automation.instance, asset_selection=sources,
                                              evaluation_time=now)
    later = dg.evaluate_automation_conditions(defs=defs, instance=automation.instance, asset_selection=sources,
                                              evaluation_time=now + timedelta(minutes=2), cursor=first.cursor)
    assert later.total_requested == 7
