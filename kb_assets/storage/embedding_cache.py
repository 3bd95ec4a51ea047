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
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


class EmbeddingCache:
    def __init__(self, warehouse: Warehouse, key: EmbeddingKey):
        self.warehouse = warehouse
        self.key = key
        self.dataset = f"{CACHE_ROOT}/{key.digest()}"

    def lookup(self, sequence_ids: list[str]) -> tuple[list[str], np.ndarray | None]:
        """The cached ones among `sequence_ids`: (their ids, [k, H] vectors in the same order)."""
        files = [str(self.warehouse.partition_file(self.dataset, c)) for c in self.warehouse.partitions(self.dataset)]
        if not files or not sequence_ids:
            return [], None
        table = ds.dataset(files, format="parquet").to_table(
            columns=["sequence_id", "vector"], filter=pc.field("sequence_id").isin(sequence_ids)
        )
        # The same sequence may sit in two chromosomes' files; keep one.
        ids = table.column("sequence_id").to_pylist()
        first = {sequence_id: row for row, sequence_id in reversed(list(enumerate(ids)))}
        rows = list(first.values())
        vectors = to_matrix(table.column("vector").take(rows)) if rows else None
        return list(first), vectors

    def store(self, chrom: str, sequence_ids: list[str], vectors: np.ndarray) -> None:
        """Add vectors to this chromosome's cache file (rewritten whole, atomically)."""
        if not sequence_ids:
            return
        new = pa.table({"sequence_id": sequence_ids, "vector": vector_column(vectors)})
        if self.warehouse.has_partition(self.dataset, chrom):
            old = self.warehouse.read_partition(self.dataset, chrom, columns=["sequence_id", "vector"])
            old = old.filter(pc.invert(pc.field("sequence_id").isin(sequence_ids)))
            new = pa.concat_tables([old.cast(new.schema), new])
        key_file = self.warehouse.dataset_dir(self.dataset) / "key.json"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(json.dumps(asdict(self.key), indent=2, sort_keys=True))
        self.warehouse.write_partition(self.dataset, chrom, new)
