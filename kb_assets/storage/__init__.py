"""Storage: hive-partitioned parquet written atomically, the DuckDB catalog over it, and the embedding cache."""

from kb_assets.storage.embedding_cache import CacheUse, EmbeddingCache, EmbeddingKey
from kb_assets.storage.vectors import to_matrix, vector_column
from kb_assets.storage.warehouse import INPUTS_FACT, Warehouse, content_version, quote_identifier, view_name

__all__ = [
    "INPUTS_FACT",
    "CacheUse",
    "EmbeddingCache",
    "EmbeddingKey",
    "Warehouse",
    "content_version",
    "quote_identifier",
    "to_matrix",
    "vector_column",
    "view_name",
]
