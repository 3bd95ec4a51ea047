"""Schedules, sensors and automation: how the graph keeps itself current.

- `chromosome_refresh` (off by default; cron from the recipe) launches one run per chromosome partition of the
  embedding chain, so a week's new checkpoint or annotation reaches every partition; unchanged inputs cost only
  cache lookups.
- `input_changes` watches the input files by content hash and the lineage table: it requests runs only for the
  asset partitions whose recorded input hash or upstream data version no longer matches, frontier first, so a
  change travels down the graph one step per tick and stops where an output comes out unchanged. Touching a
  file without changing its bytes requests nothing.
- The cohort assets downstream of every partition follow by declarative automation once all their dependencies
  are present and idle and one of them has new data (`after_upstream_data_changes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import dagster as dg

from kb_assets.audit import input_hasher, stale_reasons
from kb_assets.resources import WarehouseResource
from kb_assets.settings import Recipe

EMBEDDING_CHAIN = ("reference_sequences", "subject_haplotypes", "tokenized_genes", "gene_embeddings")


def after_upstream_data_changes() -> dg.AutomationCondition:
    """Run once every dependency is present and idle, after any of them got new data (not merely re-ran)."""
    return (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after upstream data changes")


def build_automation(recipe: Recipe, assets: Sequence[dg.AssetsDefinition]) -> dict:
    """The schedule, sensors and job of the code location, for `build_definitions`."""
    automated = {key.to_user_string() for definition in assets
                 for key, condition in definition.automation_conditions_by_key.items() if condition is not None}
    # Automated assets follow their own condition; diagnostics run on demand (stale in the audit, never requested).
    not_requested = automated | {key.to_user_string() for definition in assets
                                 for key, group in definition.group_names_by_key.items() if group == "diagnostics"}
    chromosome_job = dg.define_asset_job("chromosome_embeddings", selection=list(EMBEDDING_CHAIN),
                                         description="one chromosome partition of the embedding chain")

    @dg.schedule(job=chromosome_job, cron_schedule=recipe.schedule.cron,
                 default_status=dg.DefaultScheduleStatus.STOPPED)
    def chromosome_refresh(context: dg.ScheduleEvaluationContext):
        """One run per chromosome partition; the run key keeps a tick from launching a partition twice."""
        tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        for chrom in recipe.reference.chromosomes:
            yield dg.RunRequest(run_key=f"{tick}:{chrom}", partition_key=chrom,
                                tags={"kb_assets/trigger": "chromosome_refresh"})

    @dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
               asset_selection=dg.AssetSelection.all())
    def input_changes(warehouse: WarehouseResource):
        """Runs for the asset partitions whose inputs or upstream data changed since they were built."""
        store = warehouse.get()
        latest = store.latest_lineage_all()
        current_hash = input_hasher(store)
        stale = {key: reasons for key, record in latest.items()
                 if key[0] not in not_requested and (reasons := stale_reasons(record, latest, current_hash))}
        # The frontier only: an asset waits while something it read is itself stale. Whether the next step
        # runs is decided after this one, by its data version: unchanged output stops the change there.
        ready: dict[str | None, list[tuple[str, list[str]]]] = {}
        for (asset, partition), reasons in sorted(stale.items(), key=lambda item: (item[0][1] or "", item[0][0])):
            if not any((u["asset"], u["partition"]) in stale for u in latest[(asset, partition)]["upstream"]):
                ready.setdefault(partition, []).append((asset, reasons))
        for partition, entries in ready.items():
            reasons = [reason for _, asset_reasons in entries for reason in asset_reasons]
            digest = hashlib.sha256("\n".join(reasons).encode()).hexdigest()[:16]
            yield dg.RunRequest(
                run_key=f"{partition or 'unpartitioned'}:{digest}",
                asset_selection=[dg.AssetKey(asset) for asset, _ in entries],
                partition_key=partition,
                tags={"kb_assets/trigger": "input_changes", "kb_assets/reason": reasons[0][:250]},
            )

    automation = dg.AutomationConditionSensorDefinition(
        "cohort_follows_embeddings", target=dg.AssetSelection.assets(*sorted(automated)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes the cohort assets once every embedding partition is present and one changed",
    )
    return {"jobs": [chromosome_job], "schedules": [chromosome_refresh], "sensors": [input_changes, automation]}
