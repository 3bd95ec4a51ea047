"""Reading what a run did: materialization metadata and check evaluations per asset (and partition)."""

from __future__ import annotations

import dagster as dg


def metadata(results: list[dg.ExecuteInProcessResult], asset: str, partition: str | None = None) -> dict:
    """The plain metadata values of the last materialization of `asset` (in `partition`) among `results`."""
    found = None
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            if (materialization.asset_key == dg.AssetKey.from_user_string(asset)
                    and materialization.partition == partition):
                found = materialization
    assert found is not None, f"{asset} [{partition}] was not materialized"
    return {key: getattr(value, "value", value) for key, value in found.metadata.items()}


def check_evaluations(results: list[dg.ExecuteInProcessResult], asset: str) -> dict[str, list]:
    """check name → its evaluations on `asset`, in run order."""
    found: dict[str, list] = {}
    for result in results:
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.asset_key == dg.AssetKey.from_user_string(asset):
                found.setdefault(evaluation.check_name, []).append(evaluation)
    return found


def latest_check_evaluation(instance: dg.DagsterInstance, asset: str, check: str):
    """The newest evaluation of a check as the instance recorded it (also when its run failed)."""
    key = dg.AssetCheckKey(dg.AssetKey.from_user_string(asset), check)
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    assert records, f"{asset}:{check} never ran"
    return records[0].event.dagster_event.event_specific_data
