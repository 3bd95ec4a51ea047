"""Chromosome partitions materialized at the same time by separate processes, on one warehouse and one Dagster
instance, as a cluster runs a backfill: every row arrives, no lock error reaches the user, the catalog sees all."""

from __future__ import annotations

import re
import subprocess
import sys

import dagster as dg
import pytest

from kb_assets.genome import vcf_samples
from kb_assets.storage import Warehouse
from kb_assets.storage import warehouse as warehouse_module
from kb_assets_tests.reliability.conftest import FAST, child_env, console_script, dagster_home, run_assets

CHROMOSOMES = ["chr1", "chr2", "chrX"]
GENES_ON = {"chr1": 1, "chr2": 2, "chrX": 1}  # of SMALL_GENE_SET: DLG4 | SCN2A, CHD8 | MECP2
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
        assert catalog.execute("select distinct chrom from reference_sequences order by chrom").fetchall() == [
            (c,) for c in CHROMOSOMES]
        assert catalog.execute("select distinct chrom from tokenized_genes order by chrom").fetchall() == [
            (c,) for c in CHROMOSOMES]
        lineage = catalog.execute(
            "select partition, count(*) from lineage where asset = ? group by partition order by partition",
            ["gene_embeddings"]).fetchall()
        assert lineage == [(c, 1) for c in CHROMOSOMES]

    # The Dagster instance recorded every run (the upstream one and each process's two) as a success.
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * (1 + 2 * len(CHROMOSOMES))
        assert instance.get_materialized_partitions(dg.AssetKey("gene_embeddings")) == set(CHROMOSOMES)
    finally:
        instance.dispose()


# Another program with the catalog open, as a user's DuckDB shell or notebook has it while runs go on.
HOLD_CATALOG = ("import duckdb, sys, time; connection = duckdb.connect(sys.argv[1], read_only=True); "
                "print('open', flush=True); time.sleep(float(sys.argv[2]))")


def _record(warehouse: Warehouse, asset: str) -> None:
    warehouse.record_lineage(asset, partition=None, run_id="r", recipe_id="x", code_version="1",
                             data_version="d", path=None, facts={})


def _hold_catalog(warehouse: Warehouse, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CATALOG, str(warehouse.catalog_path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    return holder


def test_catalog_writes_wait_for_another_program_holding_the_file(tmp_path):
    warehouse = Warehouse(tmp_path)
    _record(warehouse, "before")
    holder = _hold_catalog(warehouse, 2)
    try:
        _record(warehouse, "while held")  # waits for the holder instead of failing on DuckDB's lock
        assert holder.poll() is not None
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute("select asset from lineage order by materialized_at").fetchall() == [
            ("before",), ("while held",)]


def test_catalog_held_too_long_is_one_clear_error(tmp_path, monkeypatch):
    warehouse = Warehouse(tmp_path)
    _record(warehouse, "before")
    monkeypatch.setattr(warehouse_module, "_BUSY_TIMEOUT_S", 0.5)
    holder = _hold_catalog(warehouse, 60)
    try:
        with pytest.raises(RuntimeError) as caught:
            _record(warehouse, "while held")
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
