"""Vectors in Arrow: a [n, H] float32 matrix ⇄ a FixedSizeList<float32>[H] column (DuckDB reads FLOAT[H])."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """[n, H] float32 from a fixed-size-list column (zero-copy where Arrow allows)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32, copy=False)
