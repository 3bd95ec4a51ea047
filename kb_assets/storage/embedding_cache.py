"""The embedding cache: one vector per (sequence, everything that shapes its vector), kept in the warehouse.

Vectors live under ``embedding_cache/<key digest>/chrom=<c>/part-0.parquet``: a changed model, tokenizer, RC
mode, pooling, window or dtype is a new digest (a miss), and each chromosome partition writes only its own file,
so concurrent partitions never touch the same file. ``key.json`` beside them says what the digest stands for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from kb_assets.storage.vectors import to_matrix, vector_column
from kb_assets.storage.warehouse import Warehouse

CACHE_ROOT = "embedding_cache"
# Part of every digest: a change of the cache files' columns starts new folders instead of misreading old ones.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class EmbeddingKey:
    """Everything besides the sequence that changes its vector."""

    model_sha256: str
    tokenizer_version: str
    rc_mode: str
    pooling: str
    window_tokens: int
    window_overlap: int
    dtype: str

    def digest(self) -> str:
        payload = {**asdict(self), "cache_format": CACHE_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class EmbeddingCache:
    def __init__(self, warehouse: Warehouse, key: EmbeddingKey):
        self.warehouse = warehouse
        self.key = key
        self.dataset = f"{CACHE_ROOT}/{key.digest()}"

    def _read(self, sequence_ids: list[str], column: str) -> pa.Table | None:
        files = [str(self.warehouse.partition_file(self.dataset, c)) for c in self.warehouse.partitions(self.dataset)]
        if not files or not sequence_ids:
            return None
        return ds.dataset(files, format="parquet").to_table(
            columns=["sequence_id", column], filter=pc.field("sequence_id").isin(sequence_ids)
        )

    def lookup(self, sequence_ids: list[str]) -> tuple[list[str], np.ndarray | None]:
        """The cached ones among `sequence_ids`: (their ids, [k, H] vectors in the same order)."""
        table = self._read(sequence_ids, "vector")
        if table is None:
            return [], None
        # The same sequence may sit in two chromosomes' files; keep one.
        ids = table.column("sequence_id").to_pylist()
        first = {sequence_id: row for row, sequence_id in reversed(list(enumerate(ids)))}
        rows = list(first.values())
        vectors = to_matrix(table.column("vector").take(rows)) if rows else None
        return list(first), vectors

    def strand_cosines(self, sequence_ids: list[str]) -> np.ndarray:
        """The forward-vs-reverse-complement cosine stored with each of `sequence_ids` (NaN where none is)."""
        table = self._read(sequence_ids, "strand_cosine")
        known = dict(zip(table.column("sequence_id").to_pylist(), table.column("strand_cosine").to_pylist())) \
            if table is not None else {}
        return np.array([known.get(i, np.nan) for i in sequence_ids], dtype=np.float64)

    def store(self, chrom: str, sequence_ids: list[str], vectors: np.ndarray,
              strand_cosines: np.ndarray | None = None) -> None:
        """Add vectors (and their strands' cosines, when known) to this chromosome's cache file, rewritten whole
        and atomically."""
        if not sequence_ids:
            return
        cosines = np.full(len(sequence_ids), np.nan) if strand_cosines is None else strand_cosines
        new = pa.table({"sequence_id": sequence_ids, "vector": vector_column(vectors),
                        "strand_cosine": pa.array(cosines, pa.float32(), from_pandas=True)})
        if self.warehouse.has_partition(self.dataset, chrom):
            old = self.warehouse.read_partition(self.dataset, chrom, columns=["sequence_id", "vector", "strand_cosine"])
            old = old.filter(pc.invert(pc.field("sequence_id").isin(sequence_ids)))
            new = pa.concat_tables([old.cast(new.schema), new])
        key_file = self.warehouse.dataset_dir(self.dataset) / "key.json"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(json.dumps(asdict(self.key), indent=2, sort_keys=True))
        self.warehouse.write_partition(self.dataset, chrom, new)
