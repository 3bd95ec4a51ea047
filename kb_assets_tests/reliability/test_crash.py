"""A run killed with SIGKILL (the OOM killer, a pre-empted node, `scancel`) while it writes: the previous version
stays whole and readable, nothing half-written is ever read, and a rerun finishes the job exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kb_assets.storage import Warehouse
from kb_assets_tests.reliability.conftest import FAST, TWO_CHROMOSOME_GENES, TWO_CHROMOSOMES, child_env, run_assets

# A child process that materializes gene_embeddings[chr2] through the real Dagster code path; its parquet writer
# is wrapped (in the child only) so the partition's file is half on disk when the child says "ready" and waits
# for the kill.
KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import dagster as dg
    import pyarrow.parquet as pq
    from kb_assets.definitions import build_definitions
    from kb_assets.settings import load_recipe

    recipe_path, partition_dir, ready = sys.argv[1:]
    write_table = pq.write_table

    def half_written_then_killed(table, where, **kwargs):
        write_table(table, where, **kwargs)
        if Path(where).parent == Path(partition_dir):
            os.truncate(where, os.path.getsize(where) // 2)
            Path(ready).write_text(str(where))
            time.sleep(600)

    pq.write_table = half_written_then_killed
    job = build_definitions(load_recipe(recipe_path)).resolve_implicit_global_asset_job_def()
    job.execute_in_process(asset_selection=[dg.AssetKey("gene_embeddings")], partition_key="chr2",
                           instance=dg.DagsterInstance.ephemeral())
""")

# A child that holds the catalog's lock, inside an open DuckDB transaction with a lineage row inserted, when killed.
KILLED_IN_CATALOG = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kb_assets.storage import Warehouse
    from kb_assets.storage.warehouse import _LINEAGE_DDL

    root, ready = sys.argv[1:]
    with Warehouse(root).catalog() as connection:
        connection.execute(_LINEAGE_DDL)
        connection.execute("begin transaction")
        connection.execute("insert into lineage (asset, materialized_at) values ('half', now())")
        Path(ready).write_text("holding the lock")
        time.sleep(600)
""")


def _kill_when_ready(command: list[str], ready: Path, timeout: float = 180) -> None:
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if child.poll() is not None:
                pytest.fail(f"the child exited ({child.returncode}) before the kill point:\n"
                            f"{child.stdout.read().decode(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached the kill point")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def _temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(".tmp"))


def test_sigkill_while_writing_a_partition_keeps_the_previous_version_and_a_rerun_finishes(
        make_recipe, materialize, tmp_path):
    first = make_recipe(genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES, **FAST)
    materialize(first, partitions=["chr2"])
    warehouse = Warehouse(first.warehouse.root)
    partition = warehouse.partition_file("gene_embeddings", "chr2")
    before = partition.read_bytes()
    rows_before = pq.read_table(partition).num_rows
    lineage_before = warehouse.latest_lineage("gene_embeddings", "chr2")

    # The rerun changes the pooling, so what it writes differs from what is there.
    second = make_recipe("max_pooling", genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES,
                         **{**FAST, "encoder": {"dtype": "float32", "pooling": "max"}},
                         warehouse={"root": str(warehouse.root)})
    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", KILLED_WRITER, str(second.source), str(partition.parent), str(ready)],
                     ready)

    # Killed mid-write: its half file is there, under a name no reader picks up; the previous version is intact.
    half = Path(ready.read_text())
    assert _temporaries(warehouse.root) == [half]
    assert half.parent == partition.parent and 0 < half.stat().st_size
    assert partition.read_bytes() == before
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute("select count(*) from gene_embeddings").fetchone() == (rows_before,)
        assert catalog.execute("select count(*) from gene_embeddings where chrom = ?", ["chr2"]).fetchone() == (
            rows_before,)
    # What the catalog says made the partition is still what made the bytes there.
    assert warehouse.latest_lineage("gene_embeddings", "chr2") == lineage_before
    assert lineage_before["facts"]["pooling_strategy"] == "mean"

    # The rerun completes, replaces the partition whole and removes the dead writer's leftover.
    run_assets(second, materialize.instance, "gene_embeddings", partition="chr2")
    assert _temporaries(warehouse.root) == []
    assert partition.read_bytes() != before
    after = pq.read_table(partition).to_pandas()
    n_subjects = after["subject_id"].nunique()
    assert len(after) == n_subjects * 2 == rows_before  # SCN2A_demo and CHD8_demo for REF and every subject
    assert not after.duplicated(["subject_id", "gene_id"]).any()
    assert warehouse.latest_lineage("gene_embeddings", "chr2")["facts"]["pooling_strategy"] == "max"
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute(
            "select count(*), count(distinct (subject_id, gene_id)) from gene_embeddings").fetchone() == (
            rows_before, rows_before)


def test_sigkill_while_holding_the_catalog_loses_only_the_open_transaction(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.record_lineage("before", partition=None, run_id="r1", recipe_id="x", code_version="1",
                             data_version="d1", path=None, facts={})
    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", KILLED_IN_CATALOG, str(warehouse.root), str(ready)], ready)

    # The kernel released the dead process's lock: the next writer gets it at once, not after the timeout.
    warehouse._lock.timeout = 10
    started = time.monotonic()
    warehouse.record_lineage("after", partition=None, run_id="r2", recipe_id="x", code_version="1",
                             data_version="d2", path=None, facts={})
    assert time.monotonic() - started < 10
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute("select asset from lineage order by materialized_at").fetchall() == [
            ("before",), ("after",)]


def test_a_dead_writers_leftover_is_removed_and_a_live_writers_kept(tmp_path):
    warehouse = Warehouse(tmp_path)
    target = warehouse.partition_file("things", "chr1")
    target.parent.mkdir(parents=True)
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = {
        "dead": target.parent / f".part-0.parquet.{host}-{int(dead.stdout)}-0123456789ab.tmp",
        "live": target.parent / f".part-0.parquet.{host}-{os.getpid()}-0123456789ab.tmp",
        "old_other_host": target.parent / ".part-0.parquet.other-host-7-0123456789ab.tmp",
        "recent_other_host": target.parent / ".part-0.parquet.other-host-8-0123456789ab.tmp",
        "other_file": target.parent / ".part-1.parquet.other-host-9-0123456789ab.tmp",
    }
    for path in leftovers.values():
        path.write_bytes(b"half")
    day_and_a_bit = time.time() - 25 * 3600
    os.utime(leftovers["old_other_host"], (day_and_a_bit, day_and_a_bit))

    warehouse.write_partition("things", "chr1", pa.table({"value": [1]}))
    remaining = {name for name, path in leftovers.items() if path.exists()}
    assert remaining == {"live", "recent_other_host", "other_file"}
    assert warehouse.read_partition("things", "chr1").column("value").to_pylist() == [1]
