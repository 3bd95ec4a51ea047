"""What a recipe's Dagster instance knows of its assets: the latest materialization of each asset (partition) with
its metadata as plain values, and the latest evaluation of each asset check. The one module of the report that
reads Dagster; everything else works on what these functions return."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg

_CHECK_HISTORY = 1000  # evaluations read per check to find each partition's latest


class Markdown(str):
    """Markdown metadata (plots as inline PNG images, small tables): the report renders it."""


@dataclass(frozen=True)
class Materialization:
    asset: str
    partition: str | None
    run_id: str
    materialized_at: datetime
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    asset: str
    check: str
    partition: str | None
    status: str  # passed, failed, warning (failed with severity WARN) or planned (no evaluation recorded)
    description: str
    details: dict[str, object]
    run_id: str


def plain_metadata(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, object]:
    """Metadata values as Python values: markdown as `Markdown`, a table schema as 'name type' strings."""
    plain: dict[str, object] = {}
    for key, value in metadata.items():
        if isinstance(value, dg.MarkdownMetadataValue):
            plain[key] = Markdown(value.value)
        elif isinstance(value, dg.TableSchemaMetadataValue):
            plain[key] = [f"{column.name} {column.type}" for column in value.value.columns]
        else:
            plain[key] = value.value
    return plain


def latest_materialization(instance: dg.DagsterInstance, asset: str,
                           partition: str | None = None) -> Materialization | None:
    """The newest materialization of an asset (of one partition), None when it was never materialized."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(asset),
                              asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records:
        return None
    record = records[0]
    materialization = record.asset_materialization
    return Materialization(
        asset=asset, partition=materialization.partition, run_id=record.run_id,
        materialized_at=datetime.fromtimestamp(record.timestamp, timezone.utc),
        metadata=plain_metadata(materialization.metadata),
    )


def materialized_partitions(instance: dg.DagsterInstance, asset: str, order: Iterable[str]) -> list[str]:
    """The partitions of an asset materialized at least once, in `order` (then any others, sorted)."""
    present = set(instance.get_materialized_partitions(dg.AssetKey.from_user_string(asset)))
    ordered = [p for p in order if p in present]
    return ordered + sorted(present - set(ordered))


def latest_check_results(instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]) -> list[CheckResult]:
    """The latest evaluation of each asset check, per partition for checks of partitioned assets."""
    run_partitions: dict[str, str | None] = {}

    def partition_of(record) -> str | None:
        # Checks of a partitioned asset evaluated in its run carry no partition of their own: the run's tag has it.
        if record.partition is not None:
            return record.partition
        if record.run_id not in run_partitions:
            run = instance.get_run_by_id(record.run_id)
            run_partitions[record.run_id] = run.tags.get("dagster/partition") if run else None
        return run_partitions[record.run_id]

    results = []
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=_CHECK_HISTORY)
        seen: set[str | None] = set()
        for record in history:  # newest first
            partition = partition_of(record)
            if partition in seen:
                continue
            seen.add(partition)
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation):
                status, description, details = "planned", "", {}
            else:
                warned = not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
                status = "passed" if evaluation.passed else ("warning" if warned else "failed")
                description, details = evaluation.description or "", plain_metadata(evaluation.metadata)
            results.append(CheckResult(
                asset=key.asset_key.to_user_string(), check=key.name, partition=partition, status=status,
                description=description, details=details, run_id=record.run_id,
            ))
    return sorted(results, key=lambda r: (r.asset, r.check, r.partition or ""))
