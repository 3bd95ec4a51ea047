"""A run killed with SIGKILL (the OOM killer, a pre-empted node, `scancel`) while it writes or embeds: the previous
version stays whole and readable, nothing half-written is ever read, finished forward passes are kept, and a rerun
finishes the job exactly."""

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

from kb_assets.encoders import chromosome
from kb_assets.encoders.tokenized import model_windows
from kb_assets.genome import vcf_samples
from kb_assets.storage import Warehouse
from kb_assets.storage.embedding_cache import CACHE_ROOT
from kb_assets_tests.reliability.conftest import (
    FAST,
    GENE_EMBEDDING_FILES,
    TWO_CHROMOSOME_GENES,
    TWO_CHROMOSOMES,
    child_env,
    one_fact,
    partition_bytes,
    partition_facts,
    run_assets,
)

# A child process that materializes gene_embeddings[chr2] through the real Dagster code path; its parquet writer
# is wrapped (in the child only) so the partition's first file is half on disk when the child says "ready" and
# waits for the kill.
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

# A child that embeds gene_embeddings[chr2], committing the window cache every few windows, and is killed right
# after a given number of cache parts are on disk (it writes how many windows they hold into `ready`).
KILLED_WHILE_EMBEDDING = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import dagster as dg
    from kb_assets.definitions import build_definitions
    from kb_assets.settings import load_recipe
    from kb_assets.storage import embedding_cache

    recipe_path, ready, commit_windows, parts_before_kill = sys.argv[1:]
    embedding_cache.COMMIT_WINDOWS = int(commit_windows)
    commit = embedding_cache.EmbeddingCache._commit
    committed = []

    def commit_then_killed(self, keys, stats):
        commit(self, keys, stats)
        committed.append(len(keys))
        if len(committed) == int(parts_before_kill):
            Path(ready).write_text(str(sum(committed)))
            time.sleep(600)

    embedding_cache.EmbeddingCache._commit = commit_then_killed
    job = build_definitions(load_recipe(recipe_path)).resolve_implicit_global_asset_job_def()
    job.execute_in_process(asset_selection=[dg.AssetKey("gene_embeddings")], partition_key="chr2",
                           instance=dg.DagsterInstance.ephemeral())
""")

# A child that holds the catalog's lock, inside an open DuckDB transaction that has created a view, when killed.
KILLED_IN_CATALOG = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kb_assets.storage import Warehouse

    root, ready = sys.argv[1:]
    with Warehouse(root).catalog() as connection:
        connection.execute("begin transaction")
        connection.execute("create view half_made as select 1 as x")
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


def _gene_embedding_rows(warehouse: Warehouse, chrom: str) -> tuple[int, int]:
    """(rows, distinct (subject, gene) pairs) of the derived `gene_embeddings` view for one chromosome."""
    with warehouse.catalog(read_only=True) as catalog:
        return catalog.execute("select count(*), count(distinct (subject_id, gene_id)) from gene_embeddings "
                               "where chrom = ?", [chrom]).fetchone()


def test_sigkill_while_writing_a_partition_keeps_the_previous_version_and_a_rerun_finishes(
        make_recipe, materialize, tmp_path):
    first = make_recipe(genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES, **FAST)
    materialize(first, partitions=["chr2"])
    warehouse = Warehouse(first.warehouse.root)
    before, facts_before = partition_bytes(warehouse, "chr2"), partition_facts(warehouse, "chr2")
    assert one_fact(warehouse, "chr2", "pooling_strategy") == "mean"
    n_subjects = len(vcf_samples(first.inputs.vcf))
    rows = 2 * (n_subjects + 1)  # SCN2A_demo and CHD8_demo, for REF and every subject
    assert _gene_embedding_rows(warehouse, "chr2") == (rows, rows)

    # The rerun changes the pooling, so what it writes differs from what is there (and needs no forward pass).
    second = make_recipe("max_pooling", genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES,
                         **{**FAST, "encoder": {"dtype": "float32", "pooling": "max"}},
                         warehouse={"root": str(warehouse.root)})
    first_file = warehouse.partition_file(GENE_EMBEDDING_FILES[0], "chr2")
    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", KILLED_WRITER, str(second.source), str(first_file.parent), str(ready)],
                     ready)

    # Killed mid-write: its half file is there, under a name no reader picks up; the previous version is intact,
    # and the facts in its files still say what made it.
    half = Path(ready.read_text())
    assert _temporaries(warehouse.root) == [half]
    assert half.parent == first_file.parent and 0 < half.stat().st_size
    assert partition_bytes(warehouse, "chr2") == before
    assert partition_facts(warehouse, "chr2") == facts_before
    assert _gene_embedding_rows(warehouse, "chr2") == (rows, rows)
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute("select count(*) from facts where file_name like ?",
                               ["%gene_embeddings%chrom=chr2%"]).fetchone() == (len(GENE_EMBEDDING_FILES),)

    # The rerun completes, replaces the partition whole and removes the dead writer's leftover.
    run_assets(second, materialize.instance, "gene_embeddings", partition="chr2")
    assert _temporaries(warehouse.root) == []
    after = partition_bytes(warehouse, "chr2")
    assert all(after[name] != before[name] for name in GENE_EMBEDDING_FILES)
    assert one_fact(warehouse, "chr2", "pooling_strategy") == "max"
    assert one_fact(warehouse, "chr2", "write_id") != facts_before[GENE_EMBEDDING_FILES[0]]["write_id"]
    assert _gene_embedding_rows(warehouse, "chr2") == (rows, rows)
    assert warehouse.read_partition("gene_embeddings/subjects", "chr2").num_rows == n_subjects


def test_sigkill_while_embedding_keeps_the_committed_windows_and_the_rerun_embeds_only_the_rest(
        make_recipe, materialize, tmp_path, monkeypatch):
    # Small forward batches, so that the cache is committed several times while the partition embeds.
    recipe = make_recipe(genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES,
                         **{**FAST, "encoder": {"dtype": "float32", "batch_tokens": 512}})
    instance = materialize.instance
    run_assets(recipe, instance, "reference_genome", "gene_annotations", "gene_set")
    run_assets(recipe, instance, "reference_sequences", "subject_haplotypes", "tokenized_genes", partition="chr2")
    warehouse = Warehouse(recipe.warehouse.root)
    needed = {window.key for window in model_windows(warehouse.read_partition("tokenized_genes", "chr2"))}

    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", KILLED_WHILE_EMBEDDING, str(recipe.source), str(ready), "4", "2"],
                     ready)
    committed = int(ready.read_text())
    cache_folders = list(warehouse.dataset_dir(CACHE_ROOT).iterdir())
    assert len(cache_folders) == 1
    killed_parts = {p: p.read_bytes() for p in sorted(cache_folders[0].glob("part-*.parquet"))}
    killed_keys = {key for p in killed_parts for key in pq.read_table(p).column("window_key").to_pylist()}
    # Both parts are whole (readable), nothing half-written is left, and the partition was never written.
    assert len(killed_parts) == 2 and len(killed_keys) == committed
    assert 0 < committed < len(needed), "the kill must come while windows are still to be embedded"
    assert _temporaries(warehouse.root) == []
    assert not any(warehouse.has_partition(name, "chr2") for name in GENE_EMBEDDING_FILES)

    # The rerun: every window handed to the model is counted.
    forwarded: list[bytes] = []
    run_windows = chromosome.run_windows

    def counted(model, windows, **kwargs):
        forwarded.extend(window.key for window in windows)
        return run_windows(model, windows, **kwargs)

    monkeypatch.setattr(chromosome, "run_windows", counted)
    result = run_assets(recipe, instance, "gene_embeddings", partition="chr2")

    # The dead run's parts are kept as they were and none of their windows is embedded again: every window was
    # run through the model exactly once over the two runs, and together they cover the partition.
    assert {p: p.read_bytes() for p in killed_parts} == killed_parts
    assert not killed_keys & set(forwarded)
    assert len(forwarded) == len(set(forwarded))
    stored = [key for p in sorted(cache_folders[0].glob("part-*.parquet"))
              for key in pq.read_table(p).column("window_key").to_pylist()]
    assert len(stored) == len(set(stored)) == committed + len(forwarded)
    assert needed <= set(stored)

    # What the materialization reports agrees: the committed windows were cache hits, the rest embedded.
    metadata = {key: getattr(value, "value", value) for key, value in
                result.asset_materializations_for_node("gene_embeddings")[0].metadata.items()}
    assert (metadata["cache_hits"], metadata["embedded_windows"]) == (committed, len(needed) - committed)
    rows = 2 * (len(vcf_samples(recipe.inputs.vcf)) + 1)
    assert _gene_embedding_rows(warehouse, "chr2") == (rows, rows)
    assert one_fact(warehouse, "chr2", "write_id")  # the four files written together


def test_sigkill_while_holding_the_catalog_loses_only_the_open_transaction(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.write_table("before", pa.table({"x": [1]}))
    warehouse.register_views(["before"])
    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", KILLED_IN_CATALOG, str(warehouse.root), str(ready)], ready)

    # The kernel released the dead process's lock: the next writer gets it at once, not after the timeout.
    warehouse._lock.timeout = 10
    warehouse.write_table("after", pa.table({"x": [2]}))
    started = time.monotonic()
    warehouse.register_views(["after"])
    assert time.monotonic() - started < 10
    with warehouse.catalog(read_only=True) as catalog:
        views = catalog.execute("select view_name from duckdb_views() where not internal order by 1").fetchall()
        assert views == [("after",), ("before",), ("facts",)]
        assert catalog.execute("select * from before union all select * from after").fetchall() == [(1,), (2,)]


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

    warehouse.write_partitions({"things": pa.table({"value": [1]})}, "chr1")
    remaining = {name for name, path in leftovers.items() if path.exists()}
    assert remaining == {"live", "recent_other_host", "other_file"}
    assert warehouse.read_partition("things", "chr1").column("value").to_pylist() == [1]
