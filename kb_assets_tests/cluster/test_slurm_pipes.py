"""Steps run as SLURM jobs on a real single-node cluster (local_slurm): what SLURM itself records, what reaches the
Dagster event log, and what a cancelled job leaves behind."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from kb_assets.cluster.slurm import SlurmSettings
from kb_assets.cluster.slurm_pipes import SlurmPipesClient, job_entry_command
from kb_assets.cluster.staging import STAGING_DIR
from kb_assets_tests.cluster.local_slurm import LocalSlurm

pytestmark = pytest.mark.slow

PARTITIONS = dg.StaticPartitionsDefinition(["p1", "p2", "p3"])
REPO_ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = "kb_assets_tests.cluster.slurm_payloads"


def _probe_asset(warehouse: Path, payload: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=PARTITIONS)
    def slurm_probe(context: dg.AssetExecutionContext, slurm: SlurmPipesClient) -> dg.MaterializeResult:
        return slurm.run(
            context=context, command=job_entry_command(slurm.settings, f"{PAYLOADS}:{payload}"),
            publish_to=warehouse, env={"PYTHONPATH": str(REPO_ROOT)},
        ).get_materialize_result()

    return slurm_probe


def _client(tmp_path: Path) -> SlurmPipesClient:
    # The test cluster's node has 2 CPUs and 2 fake GPUs: one of each per job, as a deployment file would say.
    return SlurmPipesClient(SlurmSettings(work_dir=str(tmp_path / "jobs"), time="00:10:00", gres="gpu:1",
                                          cpus_per_task=1, python=sys.executable))


def _materialization(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_backfill_runs_each_partition_as_a_slurm_job(local_slurm: LocalSlurm, tmp_path: Path, capsys):
    warehouse = tmp_path / "warehouse"
    (warehouse / "probe").mkdir(parents=True)
    (warehouse / "probe" / "p1.txt").write_text("earlier output\n")
    asset = _probe_asset(warehouse, "write_probe")
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    results = {key: dg.materialize([asset], partition_key=key, instance=instance,
                                   resources={"slurm": _client(tmp_path)})
               for key in PARTITIONS.get_partition_keys()}
    elapsed = time.perf_counter() - started
    step_stdout = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n3 partitions as 3 SLURM jobs, one after the other: {elapsed:.1f} s")

    finished = local_slurm.finished_jobs()
    for key, result in results.items():
        assert result.success
        metadata = _materialization(result)
        job_id = metadata["slurm_job_id"]
        # The orchestrator's job id is the one the job saw, and SLURM itself logged the job as completed.
        assert metadata["job_side_slurm_job_id"] == job_id
        assert metadata["slurm_state"] == "COMPLETED" and metadata["rows"] == 1
        assert finished[job_id]["JobState"] == "COMPLETED"
        assert finished[job_id]["Name"] == f"kb_assets-slurm_probe-{key}"
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        assert "TresPerNode=gres:gpu:1" in shown
        # The job's stdout reached the step's stdout (the compute log) through the SLURM log.
        assert f"stdout of the probe for {key}" in step_stdout
        # The job side's log line is in this run's Dagster event log.
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
        assert any(f"probe {key} running as SLURM job {job_id}" in m for m in messages), messages
        # Published on success, replacing the earlier p1 output; nothing left in staging.
        assert (warehouse / "probe" / f"{key}.txt").read_text() == f"{key} written by SLURM job {job_id}\n"
    assert len({_materialization(r)["slurm_job_id"] for r in results.values()}) == 3
    assert not any((warehouse / STAGING_DIR).iterdir())


def _cancel_once_staged(warehouse: Path, job_name: str, cancelled: list[str], deadline_s: float = 90) -> None:
    """scancel the job named `job_name` once it runs and has staged its output."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%i %T"], capture_output=True, text=True)
        running = [line.split()[0] for line in queue.stdout.splitlines() if line.endswith("RUNNING")]
        if running and list((warehouse / STAGING_DIR).glob("*/probe/p2.txt")):
            subprocess.run(["scancel", running[0]], check=True)
            cancelled.append(running[0])
            return
        time.sleep(0.2)


def test_a_cancelled_job_fails_its_run_and_publishes_nothing(local_slurm: LocalSlurm, tmp_path: Path):
    warehouse = tmp_path / "warehouse"
    (warehouse / "probe").mkdir(parents=True)
    earlier = warehouse / "probe" / "p2.txt"
    earlier.write_text("earlier output\n")
    cancelled: list[str] = []
    canceller = threading.Thread(target=_cancel_once_staged,
                                 args=(warehouse, "kb_assets-slurm_probe-p2", cancelled), daemon=True)
    canceller.start()
    result = dg.materialize([_probe_asset(warehouse, "write_then_wait")], partition_key="p2",
                            instance=dg.DagsterInstance.ephemeral(), resources={"slurm": _client(tmp_path)},
                            raise_on_error=False)
    canceller.join(timeout=5)

    assert cancelled, "the job never ran with its output staged"
    [job_id] = cancelled
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert f"SLURM job {job_id} ended CANCELLED" in message and "nothing it wrote was published" in message
    assert local_slurm.finished_jobs()[job_id]["JobState"] == "CANCELLED"
    assert earlier.read_text() == "earlier output\n"
    assert not any((warehouse / STAGING_DIR).iterdir())


def test_a_failing_job_fails_its_run_with_the_log_tail(local_slurm: LocalSlurm, tmp_path: Path):
    warehouse = tmp_path / "warehouse"
    result = dg.materialize([_probe_asset(warehouse, "fail_loudly")], partition_key="p3",
                            instance=dg.DagsterInstance.ephemeral(), resources={"slurm": _client(tmp_path)},
                            raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    job_id = message.split("SLURM job ")[1].split()[0]
    assert f"SLURM job {job_id} ended FAILED" in message and "exit code 1" in message
    assert "ValueError: probe p3 fails on purpose" in message  # the Python traceback, from the SLURM log's tail
    assert local_slurm.finished_jobs()[job_id]["JobState"] == "FAILED"
    assert not (warehouse / "probe").exists()


def test_a_job_sbatch_refuses_fails_with_sbatch_s_reason(local_slurm: LocalSlurm, tmp_path: Path):
    client = SlurmPipesClient(SlurmSettings(work_dir=str(tmp_path / "jobs"), partition="no_such_partition",
                                            gres="gpu:1", cpus_per_task=1))
    result = dg.materialize([_probe_asset(tmp_path / "warehouse", "write_probe")], partition_key="p1",
                            instance=dg.DagsterInstance.ephemeral(), resources={"slurm": client},
                            raise_on_error=False)
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert "sbatch refused the job kb_assets-slurm_probe-p1" in message
    assert "invalid partition" in message.lower()
