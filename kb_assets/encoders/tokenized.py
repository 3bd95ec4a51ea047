"""Tokenized tiles as a table: one row per model window, what tokenized_genes stores and gene_embeddings reads, so a
fresh run tokenizes once and an unchanged rerun reuses the previous tokenization of every tile it already had."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kb_assets.encoders.engine import WindowTokenizer, cut_tile_windows
from kb_assets.encoders.windows import ModelWindow
from kb_assets.genome.tiles import Tile

WINDOW_SCHEMA = pa.schema([
    ("tile", pa.int32()),
    ("tile_id", pa.string()),
    ("reverse_complement", pa.bool_()),
    ("input_ids", pa.list_(pa.int32())),
    ("count_start", pa.int32()),
    ("count_end", pa.int32()),
    ("window_key", pa.binary(16)),
])


def tokenize_tiles(tokenizer: WindowTokenizer, tiles: pd.DataFrame, both_strands: bool, window_tokens: int,
                   window_overlap: int, previous: pa.Table | None = None) -> tuple[pa.Table, int]:
    """The windows of every tile (columns: WINDOW_SCHEMA), and how many tiles were tokenized now.

    `previous` is an earlier result made with the same tokenizer and window settings: tiles found there by tile_id
    are not tokenized again.
    """
    reused = None
    todo = tiles
    if previous is not None and previous.num_rows:
        known = pc.is_in(previous.column("tile_id"), value_set=pa.array(tiles["tile_id"], pa.string()))
        reused = previous.filter(known)
        todo = tiles[~tiles["tile_id"].isin(set(reused.column("tile_id").to_pylist()))]
    cut = cut_tile_windows(tokenizer, [Tile(s, a, b) for s, a, b in zip(todo["sequence"], todo["core_start"],
                                                                        todo["core_end"])],
                           both_strands, window_tokens, window_overlap)
    tile_ids = todo["tile_id"].to_numpy()[cut.tile] if len(todo) else np.array([], dtype=object)
    fresh = pa.table({
        "tile": pa.array(np.zeros(len(cut.windows), np.int32)),
        "tile_id": pa.array(tile_ids, pa.string()),
        "reverse_complement": pa.array(cut.reverse_complement),
        "input_ids": pa.array([list(w.input_ids) for w in cut.windows], pa.list_(pa.int32())),
        "count_start": pa.array([w.count_start for w in cut.windows], pa.int32()),
        "count_end": pa.array([w.count_end for w in cut.windows], pa.int32()),
        "window_key": pa.array([w.key for w in cut.windows], pa.binary(16)),
    }, schema=WINDOW_SCHEMA)
    table = fresh if reused is None else pa.concat_tables([reused.select(WINDOW_SCHEMA.names).cast(WINDOW_SCHEMA),
                                                           fresh])
    # Tile numbers are this partition's: set them from tile_id, then order rows by tile, strand and position.
    number = pd.Series(tiles["tile"].to_numpy(), index=tiles["tile_id"].to_numpy())
    tile_numbers = number.reindex(table.column("tile_id").to_numpy(zero_copy_only=False)).to_numpy(np.int32)
    table = table.set_column(0, "tile", pa.array(tile_numbers, pa.int32()))
    order = np.lexsort((table.column("count_start").to_numpy(), table.column("reverse_complement").to_numpy(),
                        tile_numbers))
    return table.take(pa.array(order)), len(todo)


def model_windows(table: pa.Table) -> list[ModelWindow]:
    """The model inputs of a window table (columns as WINDOW_SCHEMA)."""
    return [ModelWindow(tuple(ids), start, end) for ids, start, end in zip(
        table.column("input_ids").to_pylist(), table.column("count_start").to_pylist(),
        table.column("count_end").to_pylist())]


def counted_token_counts(windows: pa.Table, tiles: list[int]) -> Counter:
    """Token ids counted in the forward-strand windows of the given tiles (each token of a region once)."""
    counts: Counter = Counter()
    forward = windows.filter(pc.and_(pc.invert(windows.column("reverse_complement")),
                                     pc.is_in(windows.column("tile"), value_set=pa.array(tiles, pa.int32()))))
    for ids, start, end in zip(forward.column("input_ids").to_pylist(), forward.column("count_start").to_pylist(),
                               forward.column("count_end").to_pylist()):
        counts.update(ids[start:end])
    return counts
