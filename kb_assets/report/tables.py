"""Previews of catalog views for the report: a view's row count and first rows, cells formatted for reading.

Views are read generically through the DuckDB catalog (whatever their columns), so a table that changes shape
needs no change here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kb_assets.storage import Warehouse, quote_identifier

MAX_COLUMNS = 14
MAX_LIST_ITEMS = 4


@dataclass(frozen=True)
class TablePreview:
    name: str
    n_rows: int
    columns: list[str]
    hidden_columns: int
    rows: list[list[str]]
    numeric: list[bool]  # per shown column: right-align


def catalog_views(warehouse: Warehouse) -> dict[str, int]:
    """Every view of the catalog with its row count, by name."""
    with warehouse.catalog(read_only=True) as connection:
        views = [row[0] for row in connection.execute(
            "select view_name from duckdb_views() where not internal order by view_name").fetchall()]
        return {v: connection.execute(f"select count(*) from {quote_identifier(v)}").fetchone()[0] for v in views}


def preview(warehouse: Warehouse, view: str, n_rows: int, limit: int) -> TablePreview:
    """The first `limit` rows and MAX_COLUMNS columns of a view (`n_rows`: its row count)."""
    with warehouse.catalog(read_only=True) as connection:
        cursor = connection.execute(f"select * from {quote_identifier(view)} limit {int(limit)}")
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    shown = names[:MAX_COLUMNS]
    cells = [[format_cell(value) for value in row[:MAX_COLUMNS]] for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(shown))]
    return TablePreview(view, n_rows, shown, len(names) - len(shown), cells, numeric)


def format_cell(value: object) -> str:
    """A cell as text: floats to 4 significant digits, lists shortened with their length."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (list, tuple)):
        head = ", ".join(format_cell(item) for item in value[:MAX_LIST_ITEMS])
        return f"[{head}, … {len(value)} values]" if len(value) > MAX_LIST_ITEMS else f"[{head}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_cell(v)}" for k, v in value.items())
    return str(value)
