"""The real gene_embeddings partitions as SLURM jobs on a real single-node cluster (local_slurm): a backfill of the
demo's three chromosomes runs as three jobs, SLURM records them, and the files equal a local run's byte for byte."""

from __future__ import annotations

import sys

import dagster as dg
import pytest
import yaml

from kb_assets.encoders.chromosome import DATASETS
from kb_assets.storage import Warehouse
from kb_assets_tests.cluster.local_slurm import LocalSlurm
from kb_assets_tests.conftest import materialize_on, write_recipe

pytestmark = pytest.mark.slow
DEMO_CHROMOSOMES = ("chr1", "chr2", "chrX")


def test_a_backfill_of_the_demo_runs_as_slurm_jobs_and_equals_a_local_run(local_slurm: LocalSlurm, demo_recipe,
                                                                         tmp_path, monkeypatch):
    local = write_recipe(tmp_path / "local", demo_recipe, encoder={"dtype": "float32", "device": "cpu"})
    materialize_on(dg.DagsterInstance.ephemeral())(local, partitions=list(DEMO_CHROMOSOMES))

    settings = tmp_path / "slurm.yaml"
    settings.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "jobs"), "time": "00:10:00", "gres": "gpu:1",
                                        "cpus_per_task": 1, "python": sys.executable}))
    monkeypatch.setenv("KB_ASSETS_SLURM", str(settings))
    cluster = write_recipe(tmp_path / "cluster", demo_recipe, encoder={"dtype": "float32", "device": "cpu"})
    results = materialize_on(dg.DagsterInstance.ephemeral())(cluster, partitions=list(DEMO_CHROMOSOMES))

    jobs = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            if materialization.asset_key == dg.AssetKey("gene_embeddings"):
                jobs[materialization.partition] = materialization.metadata["slurm_job_id"].value
    assert sorted(jobs) == sorted(DEMO_CHROMOSOMES) and len(set(jobs.values())) == 3
    finished = local_slurm.finished_jobs()
    for chrom, job_id in jobs.items():
        assert finished[job_id]["JobState"] == "COMPLETED"
        assert finished[job_id]["Name"] == f"kb_assets-gene_embeddings-{chrom}"
    for chrom in DEMO_CHROMOSOMES:
        for dataset in DATASETS:
            here = Warehouse(local.warehouse.root).partition_file(dataset, chrom).read_bytes()
            there = Warehouse(cluster.warehouse.root).partition_file(dataset, chrom).read_bytes()
            assert here == there, (chrom, dataset)
    # The catalog was written by the orchestrator: the view over the published partitions answers.
    with Warehouse(cluster.warehouse.root).catalog(read_only=True) as catalog:
        assert catalog.execute("select count(distinct chrom) from gene_embeddings").fetchone() == (3,)
