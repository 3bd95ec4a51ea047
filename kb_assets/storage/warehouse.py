"""The warehouse: parquet datasets under one root, and one DuckDB file that catalogs them.

Layout (a dataset name may hold one '/', e.g. ``gene_annotations/exons``)::

    <root>/<dataset>/chrom=<c>/part-0.parquet   partitioned datasets (hive layout)
    <root>/<dataset>/data.parquet               unpartitioned datasets
    <root>/catalog.duckdb                       views over the parquet (and over the files' facts)

Each file carries its facts (the model, tokenizer, settings and input hashes that made it) in its own parquet
metadata, so a file copied out of the warehouse still says how it was made; Dagster's event log holds the runs and
data versions.

Every parquet file is written under a temporary name in its final folder and renamed into place, so a crash
leaves the previous version whole and a rerun replaces a partition entirely. The temporary name carries the
writer's host and process id, so the next write of the same file removes what a killed writer left behind.
Computation never holds the DuckDB file: only the short catalog updates do, one process at a time, under a file
lock.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256, remembered_file_sha256
from kb_assets.storage.views import derived_views, quote_identifier, view_name

CATALOG_FILE = "catalog.duckdb"
PARTITION_COLUMN = "chrom"
_LOCK_TIMEOUT_S = 600
# How long to wait for another program (a DuckDB shell, a notebook) to let go of the catalog file.
_BUSY_TIMEOUT_S = 600
# A temporary file still there after this long is a crashed writer's, whichever host wrote it.
_STALE_TEMPORARY_S = 24 * 3600
_HOST = socket.gethostname()

# Key of the schema metadata entry that holds a file's facts (JSON): how it was made, readable from the file alone.
FACTS_KEY = b"kb_assets"
# The facts key under which an asset records the input files it read ({name: {path, sha256}}).
INPUTS_FACT = "inputs"


class Warehouse:
    """Reads and writes the parquet datasets of one warehouse root and keeps its DuckDB catalog."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.catalog_path = self.root / CATALOG_FILE
        self._lock = FileLock(str(self.catalog_path) + ".lock", timeout=_LOCK_TIMEOUT_S)
        self._deferred: list[tuple[Path, Path]] | None = None  # renames held back by `together`

    # ---- paths -------------------------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset

    def partition_file(self, dataset: str, chrom: str) -> Path:
        return self.dataset_dir(dataset) / f"{PARTITION_COLUMN}={chrom}" / "part-0.parquet"

    def table_file(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "data.parquet"

    def input_sha256(self, path: str | os.PathLike) -> str:
        """The sha256 of an input file, remembered here by path, size and mtime so partitions share one read."""
        return remembered_file_sha256(path, self.root / "input_hashes")

    # ---- writes ------------------------------------------------------------------------------------------
    def write_partitions(self, tables: Mapping[str, pa.Table], chrom: str,
                         facts: Mapping[str, object] | None = None) -> dict[str, Path]:
        """Replace the `chrom` partition of several datasets: all files are written before any is renamed. `facts`
        (how they were made) go into each file's own metadata."""
        targets = {name: self.partition_file(name, chrom) for name in tables}
        tables = {name: _with_partition_column(table, chrom) for name, table in tables.items()}
        return self._write_atomically(tables, targets, facts)

    def write_outputs(self, tables: Mapping[str, pa.Table], partition: str | None,
                      facts: Mapping[str, object]) -> tuple[dict[str, Path], str, dict]:
        """Write one asset's tables (a partition of each, or whole ones) with their facts; return the paths, the
        data version and the facts as written.

        The facts gain a `write_id` from the tables' content: files written together share it, so a reader can tell
        a set that a crash left half-replaced, while equal content still gives equal bytes. The data version hashes
        the content and the facts, except the `inputs` an asset read (their paths and sha256s): that is provenance,
        so a changed VCF that leaves a chromosome's haplotypes as they were leaves that partition's version, and
        everything downstream of it, as it was.
        """
        write_id = hashlib.sha256()
        for name, table in tables.items():
            write_id.update(name.encode())
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as stream:
                stream.write_table(table)
            write_id.update(sink.getvalue())
        facts = {**facts, "write_id": write_id.hexdigest()[:16]}
        paths = self.write_tables(tables, facts) if partition is None else self.write_partitions(tables, partition,
                                                                                                   facts)
        versioned = {name: value for name, value in facts.items() if name != INPUTS_FACT}
        data_version = hashlib.sha256(json.dumps(versioned, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return paths, data_version, facts

    def write_stream(self, dataset: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                     facts: Mapping[str, object]) -> Path:
        """Write an unpartitioned dataset batch by batch (never whole in memory), atomically, with its facts."""
        target = self.table_file(dataset)
        encoded = json.dumps(facts, sort_keys=True, default=str).encode()
        schema = schema.with_metadata({**(schema.metadata or {}), FACTS_KEY: encoded})
        with self.staged(target) as temporary:
            with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch.replace_schema_metadata(schema.metadata))
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        return target

    def write_table(self, dataset: str, table: pa.Table) -> Path:
        return self._write_atomically({dataset: table}, {dataset: self.table_file(dataset)})[dataset]

    def write_tables(self, tables: Mapping[str, pa.Table], facts: Mapping[str, object] | None = None
                     ) -> dict[str, Path]:
        return self._write_atomically(dict(tables), {name: self.table_file(name) for name in tables}, facts)

    def _write_atomically(self, tables: dict[str, pa.Table], targets: dict[str, Path],
                          facts: Mapping[str, object] | None = None) -> dict[str, Path]:
        staged: list[tuple[Path, Path]] = []
        try:
            for name, table in tables.items():
                target = targets[name]
                target.parent.mkdir(parents=True, exist_ok=True)
                # A dot-name that no reader's glob (*.parquet) matches, in the target's own folder so the
                # rename below stays on one file system and is atomic.
                temporary = _temporary_path(target)
                staged.append((temporary, target))
                if facts is not None:
                    encoded = json.dumps(facts, sort_keys=True, default=str).encode()
                    table = table.replace_schema_metadata({**(table.schema.metadata or {}), FACTS_KEY: encoded})
                pq.write_table(table, temporary, compression="zstd")
                with open(temporary, "rb+") as handle:
                    os.fsync(handle.fileno())
        except BaseException as err:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise _storage_error(err, self.root) from err
            raise
        for temporary, target in staged:
            self._rename(temporary, target)
        return dict(targets)

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Every file written inside the block (write_outputs, write_stream, staged …) is renamed into place after
        the block succeeds, all at once; when it fails, none is, and their temporaries are removed. For an asset
        whose files are written one after another but must be replaced as one set."""
        self._deferred = []
        try:
            yield
        except BaseException:
            for temporary, _ in self._deferred:
                temporary.unlink(missing_ok=True)
            raise
        else:
            for temporary, target in self._deferred:
                os.replace(temporary, target)
        finally:
            self._deferred = None

    def _rename(self, temporary: Path, target: Path) -> None:
        if self._deferred is None:
            os.replace(temporary, target)
        else:
            self._deferred.append((temporary, target))

    def _written(self, target: Path) -> Path:
        """Where the bytes just written for `target` are: the target, or its temporary while `together` holds it."""
        pending = {kept: temporary for temporary, kept in self._deferred or ()}
        return pending.get(target, target)

    @contextlib.contextmanager
    def staged(self, target: Path) -> Iterator[Path]:
        """A temporary path beside `target`, renamed onto it when the block succeeds and removed when it fails."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = _temporary_path(target)
        except OSError as err:
            raise _storage_error(err, self.root) from err
        try:
            yield temporary
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise _storage_error(err, self.root) from err
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._rename(temporary, target)

    # ---- reads -------------------------------------------------------------------------------------------
    def has_partition(self, dataset: str, chrom: str) -> bool:
        return self.partition_file(dataset, chrom).exists()

    def read_partition(self, dataset: str, chrom: str, columns: list[str] | None = None,
                       filters: list[tuple] | None = None) -> pa.Table:
        """One partition (only `columns`, only rows passing pyarrow `filters` such as [("tile", "in", [...])])."""
        path = self.partition_file(dataset, chrom)
        if not path.exists():
            raise InputError(
                path, f"partition {chrom} of {dataset}", "has not been materialized",
                f"materialize {dataset.split('/')[0]} for partition {chrom} first",
            )
        return pq.read_table(path, columns=columns, filters=filters)

    def read_facts(self, dataset: str, chrom: str | None = None) -> dict:
        """The facts written into a dataset's file (of one partition): how it was made (empty when it holds none).
        InputError when the dataset was never materialized."""
        path = self.table_file(dataset) if chrom is None else self.partition_file(dataset, chrom)
        if not path.exists():
            where = f"partition {chrom} of {dataset}" if chrom else dataset
            raise InputError(path, where, "has not been materialized",
                             f"materialize {dataset.split('/')[0]}{f' for partition {chrom}' if chrom else ''} first")
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[FACTS_KEY]) if FACTS_KEY in metadata else {}

    def read_table(self, dataset: str, columns: list[str] | None = None) -> pa.Table:
        path = self.table_file(dataset)
        if not path.exists():
            raise InputError(
                path, dataset, "has not been materialized", f"materialize {dataset.split('/')[0]} first"
            )
        return pq.read_table(path, columns=columns)

    def partitions(self, dataset: str) -> list[str]:
        folder = self.dataset_dir(dataset)
        prefix = f"{PARTITION_COLUMN}="
        if not folder.exists():
            return []
        return sorted(
            p.name[len(prefix):] for p in folder.iterdir()
            if p.name.startswith(prefix) and (p / "part-0.parquet").exists()
        )

    # ---- catalog -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def catalog(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection to the catalog; one process at a time holds it (file lock). A program outside
        kb_assets that has the file open (a DuckDB shell, a notebook) is waited for, up to _BUSY_TIMEOUT_S."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                connection = _connect(self.catalog_path, read_only=read_only and self.catalog_path.exists())
                try:
                    yield connection
                finally:
                    connection.close()
        except Timeout:
            raise RuntimeError(
                f"{self.catalog_path}: another process held the catalog lock for over {_LOCK_TIMEOUT_S} s; "
                f"if no kb_assets run is active, delete {self._lock.lock_file}"
            ) from None

    def register_views(self, datasets: list[str]) -> None:
        """Create or refresh the catalog views over datasets' parquet files, then the derived views
        (storage.views) whose inputs all exist."""
        with self.catalog() as connection:
            for dataset in datasets:
                partitioned = bool(self.partitions(dataset))
                pattern = self.dataset_dir(dataset) / ("*/part-0.parquet" if partitioned else "data.parquet")
                source = f"read_parquet({_sql_string(str(pattern))}, hive_partitioning = {str(partitioned).lower()})"
                connection.execute(
                    f"create or replace view {quote_identifier(view_name(dataset))} as select * from {source}"
                )
            existing = {row[0] for row in connection.execute(
                "select view_name from duckdb_views() where not internal").fetchall()}
            for name, query in derived_views(existing):
                connection.execute(f"create or replace view {quote_identifier(name)} as {query}")
            # Every table's facts, read from the files themselves (their parquet key-value metadata).
            pattern = _sql_string(str(self.root / "**" / "*.parquet"))
            connection.execute(
                "create or replace view facts as select file_name, decode(value)::json as facts "
                f"from parquet_kv_metadata({pattern}) where decode(key) = {_sql_string(FACTS_KEY.decode())}"
            )


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another program holds a conflicting lock on the file."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            if "Could not set lock" not in str(err):
                raise
            if time.monotonic() >= deadline:
                held = str(err).split(". However")[0]
                raise RuntimeError(
                    f"{path}: another program kept the catalog open for over {_BUSY_TIMEOUT_S} s ({held}). Fix: close "
                    "it; query the catalog with short-lived connections (kb_assets waits for them), or query a copy "
                    "of the file"
                ) from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 1.0)


def content_version(*paths: Path) -> str:
    """A data version from the bytes written: identical content gives an identical version."""
    return file_sha256(paths[0])[:16] if len(paths) == 1 else "-".join(file_sha256(p)[:8] for p in paths)


def _with_partition_column(table: pa.Table, chrom: str) -> pa.Table:
    column = pa.array([chrom] * table.num_rows, type=pa.string())
    if PARTITION_COLUMN in table.column_names:
        return table.set_column(table.schema.get_field_index(PARTITION_COLUMN), PARTITION_COLUMN, column)
    return table.append_column(PARTITION_COLUMN, column)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _temporary_path(target: Path) -> Path:
    """A fresh temporary name beside `target` (after removing what crashed writers of it left there)."""
    _remove_stale_temporaries(target)
    return target.parent / f".{target.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of `target` whose writer is gone: a process of this host that no longer exists,
    or a file untouched for a day. A live writer's file (another run writing the same target) is left alone."""
    prefix = f".{target.name}."
    for path in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        host_pid, _, _ = path.name[len(prefix):-len(".tmp")].rpartition("-")
        host, _, pid = host_pid.rpartition("-")
        try:
            crashed = host == _HOST and pid.isdigit() and not process_exists(int(pid))
            if crashed or time.time() - path.stat().st_mtime > _STALE_TEMPORARY_S:
                path.unlink(missing_ok=True)
        except OSError:
            pass  # gone already, or not ours to remove: never a reason to fail the write


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _storage_error(err: OSError, root: Path) -> Exception:
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return RuntimeError(f"{root}: disk full while writing; nothing was replaced ({err.strerror}). "
                            "Free space (or raise the quota) and rerun")
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return RuntimeError(f"{root}: warehouse not writable ({err.strerror}); nothing was replaced. "
                            "Fix the permissions or point warehouse.root at a writable folder")
    return err
