"""Chromosome partitions materialized at the same time by separate processes, on one warehouse and one Dagster
instance, as a cluster runs a backfill: every row arrives, no lock error reaches the user, the catalog sees all."""

from __future__ import annotations

import re
import subprocess
import sys

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.definitions.data_version import extract_data_provenance_from_entry

from kb_assets.genome import vcf_samples
from kb_assets.storage import Warehouse
from kb_assets.storage import warehouse as warehouse_module
from kb_assets_tests.reliability.conftest import FAST, child_env, console_script, dagster_home, run_assets

CHROMOSOMES = ["chr1", "chr2", "chrX"]
GENES_ON = {"chr1": 1, "chr2": 2, "chrX": 1}  # of SMALL_GENE_SET: DLG4 | SCN2A, CHD8 | MECP2
CHAIN = ("reference_sequences", "subject_haplotypes", "tokenized_genes", "gene_embeddings")
LOCK_TROUBLE = re.compile(r"Traceback|database is locked|Could not set lock|Conflicting lock|IO Error|catalog lock",
                          re.IGNORECASE)


@pytest.mark.slow
def test_three_partitions_in_three_processes_at_once(make_recipe, tmp_path):
    recipe = make_recipe(**FAST)
    assert recipe.reference.chromosomes == CHROMOSOMES
    home = dagster_home(tmp_path / "dagster_home")
    # The instance exists before the runs start side by side (as data/ does after `make demo` or `make ui`): on
    # a DAGSTER_HOME nobody has used, concurrent first runs race to create its SQLite schema.
    instance = dg.DagsterInstance.from_config(str(home))
    run_assets(recipe, instance, "reference_genome", "gene_annotations", "gene_set")
    instance.dispose()

    command = console_script("kb-assets") + ["materialize", "--recipe", str(recipe.source)]
    processes = {chrom: subprocess.Popen(command + ["--partition", chrom], env=child_env(home), text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for chrom in CHROMOSOMES}
    outputs = {}
    try:
        for chrom, process in processes.items():
            outputs[chrom] = process.communicate(timeout=420)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for chrom, process in processes.items():
        stdout, stderr = outputs[chrom]
        assert process.returncode == 0, f"{chrom}: exit {process.returncode}\n{stderr[-3000:]}"
        assert not LOCK_TROUBLE.search(stderr + stdout), f"{chrom}:\n{stderr[-3000:]}"

    rows_per_gene = len(vcf_samples(recipe.inputs.vcf)) + 1  # every subject and REF
    warehouse = Warehouse(recipe.warehouse.root)
    with warehouse.catalog(read_only=True) as catalog:
        per_chrom = dict(catalog.execute(
            "select chrom, count(*) from gene_embeddings group by chrom").fetchall())
        assert per_chrom == {c: n * rows_per_gene for c, n in GENES_ON.items()}
        assert catalog.execute(
            "select count(*) = count(distinct (subject_id, gene_id)) from gene_embeddings").fetchone() == (True,)
        for view in ("reference_sequences", "subject_haplotypes_assignments", "tokenized_genes",
                     "gene_embeddings_vectors"):
            assert catalog.execute(f"select distinct chrom from {view} order by chrom").fetchall() == [
                (c,) for c in CHROMOSOMES], view
        # Each partition's four gene_embeddings files carry the facts of one write.
        written = dict(catalog.execute(
            "select regexp_extract(file_name, 'chrom=(\\w+)/', 1), count(distinct facts->>'write_id') from facts "
            "where file_name like ? group by all", ["%/gene_embeddings/%"]).fetchall())
        assert written == {c: 1 for c in CHROMOSOMES}

    # The Dagster instance recorded every run as a success: the upstream one, and each process's own: observing the
    # inputs, the unpartitioned assets (stale once the inputs are observed; a process whose turn comes after another
    # process re-ran them finds them fresh and skips them), and its partition. Each partition run's own events hold
    # its partition of every asset of the chain, gene_embeddings with the checkpoint observation it read.
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        observing = [run for run in runs if run.job_name == "observe_inputs"]
        partitioned = [run for run in runs if "dagster/partition" in run.tags]
        assert len(observing) == len(CHROMOSOMES)
        assert sorted(run.tags["dagster/partition"] for run in partitioned) == sorted(CHROMOSOMES)
        assert 1 <= len(runs) - 1 - len(observing) - len(partitioned) <= len(CHROMOSOMES)
        assert instance.get_materialized_partitions(dg.AssetKey("gene_embeddings")) == set(CHROMOSOMES)
        for chrom in CHROMOSOMES:
            [run] = [r for r in runs if r.tags.get("dagster/partition") == chrom]
            events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            assert {(e.asset_materialization.asset_key.to_user_string(), e.asset_materialization.partition)
                    for e in events} == {(asset, chrom) for asset in CHAIN}
            [embedded] = [e for e in events if e.asset_materialization.asset_key == dg.AssetKey("gene_embeddings")]
            provenance = extract_data_provenance_from_entry(embedded)
            assert dg.AssetKey(["inputs", "checkpoint"]) in provenance.input_data_versions
    finally:
        instance.dispose()


# Another program with the catalog open, as a user's DuckDB shell or notebook has it while runs go on.
HOLD_CATALOG = ("import duckdb, sys, time; connection = duckdb.connect(sys.argv[1], read_only=True); "
                "print('open', flush=True); time.sleep(float(sys.argv[2]))")


def _catalog(warehouse: Warehouse, dataset: str) -> None:
    """Write a small table and catalog it: a catalog write, as every materialization ends with."""
    warehouse.write_table(dataset, pa.table({"name": [dataset]}))
    warehouse.register_views([dataset])


def _cataloged(warehouse: Warehouse) -> list[str]:
    with warehouse.catalog(read_only=True) as catalog:
        return [row[0] for row in catalog.execute(
            "select view_name from duckdb_views() where not internal and view_name <> 'facts' order by 1").fetchall()]


def _hold_catalog(warehouse: Warehouse, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CATALOG, str(warehouse.catalog_path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    return holder


def test_catalog_writes_wait_for_another_program_holding_the_file(tmp_path):
    warehouse = Warehouse(tmp_path)
    _catalog(warehouse, "before")
    holder = _hold_catalog(warehouse, 2)
    try:
        _catalog(warehouse, "while_held")  # waits for the holder instead of failing on DuckDB's lock
        assert holder.poll() is not None
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert _cataloged(warehouse) == ["before", "while_held"]


def test_catalog_held_too_long_is_one_clear_error(tmp_path, monkeypatch):
    warehouse = Warehouse(tmp_path)
    _catalog(warehouse, "before")
    monkeypatch.setattr(warehouse_module, "_BUSY_TIMEOUT_S", 0.5)
    holder = _hold_catalog(warehouse, 60)
    try:
        with pytest.raises(RuntimeError) as caught:
            _catalog(warehouse, "while_held")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert re.fullmatch(
        re.escape(f"{warehouse.catalog_path}: another program kept the catalog open for over 0.5 s (IO Error: "
                  f'Could not set lock on file "{warehouse.catalog_path}": Conflicting lock is held in ')
        + r".+ \(PID \d+\)"
        + re.escape("). Fix: close it; query the catalog with short-lived connections (kb_assets waits for "
                    "them), or query a copy of the file"),
        str(caught.value)), str(caught.value)
    assert _cataloged(warehouse) == ["before"]
