"""Storage: hive-partitioned parquet written atomically, and the DuckDB catalog over it."""

from kb_assets.storage.warehouse import Warehouse, content_version, quote_identifier, view_name

__all__ = ["Warehouse", "content_version", "quote_identifier", "view_name"]
