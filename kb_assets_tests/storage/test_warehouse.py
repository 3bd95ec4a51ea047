"""The warehouse: atomic parquet replacement, catalog views, lineage, and the embedding cache."""

from __future__ import annotations

import errno
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kb_assets.errors import InputError
from kb_assets.storage import Warehouse, quote_identifier, to_matrix, vector_column


def _rows(values: list[int]) -> pa.Table:
    return pa.table({"gene": [f"g{v}" for v in values], "value": values})


def test_partition_is_replaced_whole_and_views_see_every_partition(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.write_partitions({"things": _rows([1, 2, 3])}, "chr1")
    warehouse.write_partitions({"things": _rows([4])}, "chr2")
    warehouse.register_views(["things"])
    warehouse.write_partitions({"things": _rows([5, 6])}, "chr1")
    with warehouse.catalog(read_only=True) as catalog:
        rows = catalog.execute("select chrom, value from things order by value").fetchall()
    assert rows == [("chr2", 4), ("chr1", 5), ("chr1", 6)]
    assert warehouse.partitions("things") == ["chr1", "chr2"]


def test_failed_write_leaves_the_previous_version_and_no_temporary_file(tmp_path, monkeypatch):
    warehouse = Warehouse(tmp_path)
    warehouse.write_partitions({"a": _rows([1]), "b": _rows([2])}, "chr1")
    real_write = pq.write_table

    def disk_full_on_b(table, where, **kwargs):
        if "/b/" in str(where):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", disk_full_on_b)
    with pytest.raises(RuntimeError, match="disk full while writing; nothing was replaced"):
        warehouse.write_partitions({"a": _rows([7]), "b": _rows([8])}, "chr1")
    # Neither dataset moved: a is renamed only after b is written too.
    assert warehouse.read_partition("a", "chr1").column("value").to_pylist() == [1]
    assert warehouse.read_partition("b", "chr1").column("value").to_pylist() == [2]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unwritable_warehouse_is_a_clear_error(tmp_path, monkeypatch):
    # Permissions cannot stop root (CI runs as root), so the file system's refusal is simulated.
    def refuse(table, where, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(where))

    monkeypatch.setattr(pq, "write_table", refuse)
    with pytest.raises(RuntimeError, match="warehouse not writable \\(Permission denied\\); nothing was replaced"):
        Warehouse(tmp_path).write_table("x", _rows([1]))
    assert not Warehouse(tmp_path).table_file("x").exists()


def test_facts_travel_with_the_file_and_hostile_identifiers_stay_data(tmp_path):
    warehouse = Warehouse(tmp_path)
    facts = {"gene": 'A"B;', "note": "'; drop view facts; --"}
    paths, version, written = warehouse.write_outputs({"t/a": _rows([1, 2]), "t/b": _rows([3])}, "chr1", facts)
    again, same_version, _ = warehouse.write_outputs({"t/a": _rows([1, 2]), "t/b": _rows([3])}, "chr1", facts)
    assert same_version == version  # equal content, equal bytes
    assert warehouse.read_facts("t/a", "chr1") == written == {**facts, "write_id": written["write_id"]}
    assert warehouse.read_facts("t/b", "chr1")["write_id"] == written["write_id"]  # written together
    copied = tmp_path / "elsewhere.parquet"
    copied.write_bytes(paths["t/a"].read_bytes())
    assert json.loads(pq.read_schema(copied).metadata[b"kb_assets"])["gene"] == 'A"B;'
    with pytest.raises(InputError, match="partition chr2 of t/a: has not been materialized"):
        warehouse.read_facts("t/a", "chr2")
    warehouse.register_views(["t/a"])
    with warehouse.catalog(read_only=True) as catalog:
        rows = catalog.execute("select facts->>'gene' from facts where file_name like '%chrom=chr1%'").fetchall()
    assert rows == [('A"B;',), ('A"B;',)]

    odd_name = 'odd"name'
    warehouse.write_table(odd_name, _rows([1]))
    warehouse.register_views([odd_name])
    with warehouse.catalog(read_only=True) as catalog:
        assert catalog.execute(f"select value from {quote_identifier(odd_name)}").fetchall() == [(1,)]


def test_vector_columns_round_trip():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = vector_column(vectors)
    assert column.type.list_size == 3
    np.testing.assert_array_equal(to_matrix(pa.chunked_array([column.slice(0, 1), column.slice(1)])), vectors)
