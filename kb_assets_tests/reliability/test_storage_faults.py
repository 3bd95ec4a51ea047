"""A full disk, an exceeded quota or a read-only warehouse while an asset writes: one clear error, nothing replaced,
nothing half-written left behind, the files' facts and Dagster's records untouched."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import write_recipe
from kb_assets_tests.reliability.conftest import FAST, GENES, child_env, run_assets, snapshot


def _failing_writes(monkeypatch, error: int, where: str = "") -> None:
    """The file system refuses parquet writes under `where` (every write when empty) with `error`."""
    write_table = pq.write_table

    def refuse(table, path, **kwargs):
        if where in str(path):
            raise OSError(error, os.strerror(error), str(path))
        write_table(table, path, **kwargs)

    monkeypatch.setattr(pq, "write_table", refuse)


DISK_FULL = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
}


def _disk_full(root, error: int) -> str:
    return (f"{root}: disk full while writing; nothing was replaced ({DISK_FULL[error]}). Free space (or raise the "
            "quota) and rerun")


@pytest.mark.parametrize("error", list(DISK_FULL), ids=["disk_full", "quota_exceeded"])
def test_disk_full_while_writing_a_partition_fails_the_run_and_replaces_nothing(hostile, tmp_path, monkeypatch,
                                                                                 error):
    recipe, instance, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse, instance)
    # Another pooling: a different gene_embeddings[chr1] to write, from the windows already cached.
    rerun = write_recipe(tmp_path / "cls", recipe, GENES, warehouse={"root": str(warehouse.root)},
                         **{**FAST, "encoder": {"dtype": "float32", "pooling": "cls"}})
    _failing_writes(monkeypatch, error, where="/gene_embeddings/")
    with pytest.raises(RuntimeError) as caught:
        run_assets(rerun, instance, "gene_embeddings", partition="chr1")
    assert str(caught.value) == _disk_full(warehouse.root, error)
    # Every file as it was (no temporary left, no cache part added), the same facts, no materialization recorded.
    assert snapshot(warehouse, instance) == before


def test_read_only_warehouse_fails_the_run_with_one_clear_error(hostile, monkeypatch):
    recipe, instance, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse, instance)
    _failing_writes(monkeypatch, errno.EROFS)
    with pytest.raises(RuntimeError) as caught:
        run_assets(recipe, instance, "covariates")
    assert str(caught.value) == (f"{warehouse.root}: warehouse not writable (Read-only file system); nothing was "
                                 "replaced. Fix the permissions or point warehouse.root at a writable folder")
    assert snapshot(warehouse, instance) == before


def _failing_stream(monkeypatch, error: int) -> None:
    """The file system refuses the batches of every streamed parquet write (ParquetWriter) with `error`."""

    def refuse(self, batch, *args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", refuse)


DISK_FULL_IN_PCA = {
    "scores": lambda monkeypatch: _failing_stream(monkeypatch, errno.ENOSPC),
    "fold table": lambda monkeypatch: _failing_writes(monkeypatch, errno.ENOSPC, where="/subject_embeddings_pca/"),
}


@pytest.mark.parametrize("written", list(DISK_FULL_IN_PCA))
def test_disk_full_while_writing_the_pca_replaces_none_of_its_files(hostile, tmp_path, monkeypatch, written):
    """subject_embeddings_pca writes several files (the fold models, the scores, the fold table): a full disk at any
    of them leaves every one as it was, as for a partition's files."""
    recipe, instance, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse, instance)
    rerun = write_recipe(tmp_path / "pca4", recipe, GENES, warehouse={"root": str(warehouse.root)},
                         **{**FAST, "pca": {"n_components": 4}})
    DISK_FULL_IN_PCA[written](monkeypatch)
    with pytest.raises(RuntimeError) as caught:
        run_assets(rerun, instance, "subject_embeddings_pca")
    assert str(caught.value) == _disk_full(warehouse.root, errno.ENOSPC)
    after = snapshot(warehouse, instance)
    replaced = sorted(name for name, digest in after["files"].items() if before["files"].get(name) != digest)
    assert replaced == [], f"replaced although the run failed: {replaced}"
    assert after == before


# A real write failure from the kernel, not a stand-in: the child may not grow any file past 64 KiB (EFBIG, as a
# quota or a full disk would refuse it).
FILE_SIZE_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np, pyarrow as pa
    from kb_assets.storage import Warehouse

    warehouse = Warehouse(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
    try:
        warehouse.write_partitions({"vectors": pa.table({"v": np.random.default_rng(0).random(200_000)})}, "chr1")
    except RuntimeError as err:
        print(err)
""")


def test_a_real_write_failure_from_the_kernel_leaves_the_previous_partition(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.write_partitions({"vectors": pa.table({"v": [1.0, 2.0]})}, "chr1")
    previous = warehouse.partition_file("vectors", "chr1").read_bytes()
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(warehouse.root)], env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{warehouse.root}: disk full while writing; nothing was replaced (Error writing bytes to file. Detail: "
        "[errno 27] File too large). Free space (or raise the quota) and rerun")
    assert warehouse.partition_file("vectors", "chr1").read_bytes() == previous
    assert [p.name for p in warehouse.root.rglob("*.tmp")] == []
