"""The job side without SLURM: Dagster's own PipesSubprocessClient launches `python -m kb_assets.cluster.job_entry`,
as the SLURM batch script does, so the function runs inside a real Pipes session."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import sys
from pathlib import Path

import dagster as dg

from kb_assets.cluster.staging import STAGING_EXTRA

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = dg.StaticPartitionsDefinition(["p1"])


def _asset(target: str, extras: dict) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=PARTITIONS)
    def local_probe(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        return pipes.run(
            context=context, command=[sys.executable, "-m", "kb_assets.cluster.job_entry", target], extras=extras,
            env={"SLURM_JOB_ID": "local", "PYTHONPATH": str(REPO_ROOT)},
        ).get_materialize_result()

    return local_probe


def _materialize(target: str, extras: dict) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([_asset(target, extras)], partition_key="p1", instance=instance, raise_on_error=False,
                            resources={"pipes": dg.PipesSubprocessClient(cwd=str(REPO_ROOT))})
    return result, instance


def test_the_function_runs_in_a_pipes_session_and_writes_only_to_staging(tmp_path: Path):
    result, instance = _materialize("kb_assets_tests.cluster.slurm_payloads:write_probe",
                                    {STAGING_EXTRA: str(tmp_path)})
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["job_side_slurm_job_id"].value == "local"
    assert (tmp_path / "probe" / "p1.txt").read_text() == "p1 written by SLURM job local\n"
    assert any("probe p1 running as SLURM job local" in r.user_message for r in instance.all_logs(result.run_id))


def test_a_job_without_a_staging_folder_refuses_to_write(tmp_path: Path):
    result, instance = _materialize("kb_assets_tests.cluster.slurm_payloads:write_probe", {})
    assert not result.success
    assert not list(tmp_path.iterdir())
    # The job side's exception reached Dagster's event log through Pipes.
    errors = [r.dagster_event.engine_event_data.error for r in instance.all_logs(result.run_id)
              if r.dagster_event and r.dagster_event.event_type_value == "ENGINE_EVENT"
              and r.dagster_event.engine_event_data.error]
    assert any("launched without a staging folder" in e.message for e in errors)


def test_a_target_that_is_not_module_colon_function_fails_the_step():
    result, _ = _materialize("kb_assets_tests.cluster.slurm_payloads.write_probe", {})
    assert not result.success
