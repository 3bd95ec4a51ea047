"""A run whose process was killed keeps the pool slot its step claimed (Dagster frees a slot when the step ends), and
every later step of that pool would wait for it forever. kb-assets materialize marks such runs failed and frees
their slots when it starts; a run still executing, or one it cannot tell is dead, keeps its slot."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid

import dagster as dg
import pytest

from kb_assets.cli import HOST_TAG, PID_TAG, open_instance, release_abandoned_runs
from kb_assets_tests.conftest import write_recipe


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _started_run(instance, tags: dict[str, str], step_key: str = "gene_embeddings") -> str:
    """A run as a killed process leaves it: STARTED, its step holding the `gpu` slot."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags=tags))
    assert instance.event_log_storage.claim_concurrency_slot("gpu", run_id, step_key).is_claimed
    return run_id


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 2)
        yield instance


def test_a_run_of_a_dead_process_on_this_host_is_failed_and_its_slot_freed(instance):
    host = socket.gethostname()
    dead_pid = _dead_pid()
    dead = _started_run(instance, {PID_TAG: str(dead_pid), HOST_TAG: host})
    alive = _started_run(instance, {PID_TAG: str(os.getpid()), HOST_TAG: host}, "subject_matrix")
    lines = []
    assert release_abandoned_runs(instance, lines.append) == [dead]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    held = {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}
    assert held == {alive}
    assert sorted(lines) == [f"note: run {alive} holds a pool slot and is still executing (process {os.getpid()}): "
                             "steps of that pool wait until it ends",
                             f"run {dead} was left unfinished by process {dead_pid}, which is gone: marked failed, "
                             "its pool slots freed"]


def test_a_run_from_elsewhere_keeps_its_slot_and_is_named(instance):
    elsewhere = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: "another-host"})
    ui_run = _started_run(instance, {}, "subject_matrix")
    lines = []
    assert release_abandoned_runs(instance, lines.append) == []
    held = {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}
    assert held == {elsewhere, ui_run}
    assert sorted(line.split()[2] for line in lines) == sorted([elsewhere, ui_run])
    assert all("Terminate" in line for line in lines)


@pytest.mark.slow
def test_materialize_after_a_killed_one_completes(demo_recipe, tmp_path, monkeypatch):
    """The state a kill -9 during gene_embeddings leaves (the `gpu` pool's one slot held by a STARTED run of a
    gone process): without the release, the next materialize would wait for that slot forever."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    recipe = write_recipe(tmp_path / "killed", demo_recipe, genes=["CHD8_demo"], encoder={"dtype": "float32"})
    with open_instance(recipe) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")  # data/dagster.yaml: 1 slot
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
        killed = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: socket.gethostname()})
    done = subprocess.run([sys.executable, "-m", "kb_assets.cli", "materialize", "--recipe", str(recipe.source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"run {killed} was left unfinished" in done.stdout
    assert re.search(r"^materializing .*gene_embeddings.* \(partition chr", done.stdout, re.MULTILINE)
