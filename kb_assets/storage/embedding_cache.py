"""The embedding cache: the pooled statistics of every model window ever run, keyed by the window's content.

A window's statistics depend on its ids and counted span (`ModelWindow.key`) and on the model that ran it: the
weights, the dtype, the kind of device (bf16 on CUDA and on CPU round differently) and whether the layers were
compiled. Those form the cache's `EmbeddingKey`; its digest names a folder, ``embedding_cache/<digest>/``, holding
append-only parquet parts. A part is written (atomically) every `COMMIT_WINDOWS` windows while a partition embeds, so
a killed run resumes where it stopped, and concurrent partitions never write the same file. Pooling strategy, RC
mode, tiles and windows are not part of the key: they decide which windows exist, not what a window yields.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kb_assets.encoders.engine import WindowBatch
from kb_assets.encoders.pooling import PooledStats
from kb_assets.encoders.windows import ModelWindow
from kb_assets.storage.vectors import to_matrix, vector_column
from kb_assets.storage.warehouse import Warehouse

CACHE_ROOT = "embedding_cache"
# Part of every digest: a change of the cache files' columns starts new folders instead of misreading old ones.
CACHE_FORMAT = 3
COMMIT_WINDOWS = 4096
KEY_TYPE = pa.binary(16)


@dataclass(frozen=True)
class EmbeddingKey:
    """Everything besides a window's content that changes what the model gives it."""

    model_sha256: str
    dtype: str
    device_kind: str  # "cpu" | "cuda" | …: the device type, not its number
    compiled: bool

    def digest(self) -> str:
        payload = {**asdict(self), "cache_format": CACHE_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class EmbeddingCache:
    """Lookups and incremental commits of window statistics under one EmbeddingKey."""

    def __init__(self, warehouse: Warehouse, key: EmbeddingKey):
        self.warehouse = warehouse
        self.key = key
        self.folder = warehouse.dataset_dir(f"{CACHE_ROOT}/{key.digest()}")

    def _parts(self) -> list[str]:
        return sorted(str(p) for p in self.folder.glob("part-*.parquet")) if self.folder.exists() else []

    def lookup(self, keys: list[bytes], hidden_size: int) -> tuple[np.ndarray, PooledStats]:
        """Which of `keys` are cached ([n] bool), and the statistics of those found, in the order of `keys`."""
        found = np.zeros(len(keys), dtype=bool)
        parts = self._parts()
        if not parts or not keys:
            return found, PooledStats.empty(0, hidden_size)
        dataset = ds.dataset(parts, format="parquet")
        stored = dataset.to_table(columns=["window_key"]).column("window_key")
        wanted = pa.array(keys, KEY_TYPE)
        # Row of each wanted key among the stored ones (a key stored twice, by two partitions at once: the first).
        rows = np.asarray(pc.index_in(wanted, value_set=stored).fill_null(-1), dtype=np.int64)
        found = rows >= 0
        if not found.any():
            return found, PooledStats.empty(0, hidden_size)
        table = dataset.take(pa.array(rows[found]), columns=["count", "sums", "maxes", "cls_sums"])
        return found, PooledStats(
            sums=to_matrix(table.column("sums")),
            counts=table.column("count").to_numpy().astype(np.int64),
            maxes=to_matrix(table.column("maxes")),
            cls_sums=to_matrix(table.column("cls_sums")),
        )

    def writer(self) -> CacheWriter:
        return CacheWriter(self)

    def fill(self, windows: Sequence[ModelWindow], hidden_size: int,
             embed: Callable[[list[ModelWindow]], Iterable[WindowBatch]]) -> tuple[PooledStats, CacheUse]:
        """Statistics of every window (in order): cached ones read, the others embedded with `embed` (called only
        when something is missing, so the model loads only then) and committed as they finish."""
        started = time.perf_counter()
        keys = [window.key for window in windows]
        first_of_key: dict[bytes, int] = {}
        for position, key in enumerate(keys):
            first_of_key.setdefault(key, position)
        unique = list(first_of_key)
        found, cached = self.lookup(unique, hidden_size)
        result = PooledStats.empty(len(unique), hidden_size)
        for name in ("sums", "counts", "maxes", "cls_sums"):
            getattr(result, name)[found] = getattr(cached, name)
        missing = np.flatnonzero(~found)
        real = computed = 0
        if len(missing):
            to_embed = [windows[first_of_key[unique[i]]] for i in missing]
            with self.writer() as writer:
                for batch in embed(to_embed):
                    writer.add([unique[i] for i in missing[batch.indices]], batch.stats)
                    for name in ("sums", "counts", "maxes", "cls_sums"):
                        getattr(result, name)[missing[batch.indices]] = getattr(batch.stats, name)
                    real += batch.real_tokens
                    computed += batch.computed_tokens
        position_of = {key: i for i, key in enumerate(unique)}
        use = CacheUse(hits=int(found.sum()), embedded=len(missing), embedded_tokens=real, computed_tokens=computed,
                       seconds=time.perf_counter() - started)
        return result.take(np.array([position_of[key] for key in keys], dtype=np.int64)), use

    def _commit(self, keys: list[bytes], stats: PooledStats) -> None:
        table = pa.table({
            "window_key": pa.array(keys, KEY_TYPE),
            "count": pa.array(stats.counts, pa.int32()),
            "sums": vector_column(stats.sums),
            "maxes": vector_column(stats.maxes),
            "cls_sums": vector_column(stats.cls_sums),
        })
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            key_file.write_text(json.dumps({**asdict(self.key), "cache_format": CACHE_FORMAT}, indent=2,
                                           sort_keys=True))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        target = self.folder / f"part-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        with self.warehouse.staged(target) as temporary:
            pq.write_table(table, temporary, compression="zstd")


@dataclass(frozen=True)
class CacheUse:
    """What `EmbeddingCache.fill` did: distinct windows found and embedded, model input tokens computed."""

    hits: int
    embedded: int
    embedded_tokens: int  # real tokens (specials included) of the embedded windows
    computed_tokens: int  # plus padding
    seconds: float

    @property
    def tokens_per_second(self) -> float | None:
        """None when nothing was embedded: a fully cached run has no throughput to report."""
        return self.embedded_tokens / self.seconds if self.embedded else None

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.embedded_tokens / self.computed_tokens if self.computed_tokens else 0.0


class CacheWriter:
    """Collects window statistics and commits them in parts of COMMIT_WINDOWS; `close()` commits the rest."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.keys: list[bytes] = []
        self.parts: list[PooledStats] = []
        self.committed = 0

    def add(self, keys: list[bytes], stats: PooledStats) -> None:
        self.keys.extend(keys)
        self.parts.append(stats)
        if len(self.keys) >= COMMIT_WINDOWS:
            self.flush()

    def flush(self) -> None:
        if not self.keys:
            return
        merged = PooledStats(*(np.concatenate([getattr(p, name) for p in self.parts])
                               for name in ("sums", "counts", "maxes", "cls_sums")))
        self.cache._commit(self.keys, merged)
        self.committed += len(self.keys)
        self.keys, self.parts = [], []

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Finished forward passes are kept even when the run fails later: they are correct, and a rerun uses them.
        self.flush()
