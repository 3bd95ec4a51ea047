"""Gene vectors → one row per subject: the gene set concatenated in manifest order (or its mean or max).

The matrix is filled block by block (one chromosome's gene vectors at a time) into an array the caller owns,
typically a memory-mapped .npy file, so 100,000 subjects × 38 genes × 768 never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

GenesToSubject = Literal["concat", "mean", "max"]
GENES_TO_SUBJECT = ("concat", "mean", "max")


def matrix_width(n_genes: int, hidden_size: int, genes_to_subject: GenesToSubject) -> int:
    return n_genes * hidden_size if genes_to_subject == "concat" else hidden_size


def feature_table(genes: pd.DataFrame, hidden_size: int, genes_to_subject: GenesToSubject) -> pd.DataFrame:
    """What each matrix column is: (column, gene_id, gene_name, dim); gene_id is '*' for mean/max columns."""
    if genes_to_subject == "concat":
        return pd.DataFrame({
            "column": np.arange(len(genes) * hidden_size),
            "gene_id": np.repeat(genes["gene_id"].to_numpy(), hidden_size),
            "gene_name": np.repeat(genes["gene_name"].to_numpy(), hidden_size),
            "dim": np.tile(np.arange(hidden_size), len(genes)),
        })
    return pd.DataFrame({"column": np.arange(hidden_size), "gene_id": "*", "gene_name": f"{genes_to_subject} of genes",
                         "dim": np.arange(hidden_size)})


def fill_subject_matrix(
    out: np.ndarray,
    subjects: pd.Index,
    genes: pd.Index,
    blocks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    genes_to_subject: GenesToSubject,
) -> None:
    """Write gene vectors into `out` [len(subjects), width].

    `genes` are the gene ids in manifest order; each block is (keys with subject_id and gene_id, [n, H] vectors).
    Rows of subjects not in `subjects` (REF, excluded subjects) are ignored. Every subject × gene must arrive
    exactly once; a gap raises ValueError naming the first missing gene and subject.
    """
    if genes_to_subject not in GENES_TO_SUBJECT:
        raise ValueError(f"genes_to_subject must be one of {GENES_TO_SUBJECT}, got {genes_to_subject!r}")
    seen = np.zeros((len(subjects), len(genes)), dtype=np.int32)
    if genes_to_subject == "max":
        out[:] = -np.inf
    elif genes_to_subject == "mean":
        out[:] = 0.0
    for keys, vectors in blocks:
        row = subjects.get_indexer(keys["subject_id"])
        gene = genes.get_indexer(keys["gene_id"])
        kept = (row >= 0) & (gene >= 0)
        row, gene, vectors = row[kept], gene[kept], vectors[kept]
        np.add.at(seen, (row, gene), 1)
        hidden = vectors.shape[1]
        for g in np.unique(gene):
            at = gene == g
            if genes_to_subject == "concat":
                out[row[at], g * hidden:(g + 1) * hidden] = vectors[at]
            elif genes_to_subject == "mean":
                out[row[at]] += vectors[at] / len(genes)
            else:
                out[row[at]] = np.maximum(out[row[at]], vectors[at])
    if (seen != 1).any():
        subject, gene = np.argwhere(seen != 1)[0]
        raise ValueError(f"gene {genes[gene]} of subject {subjects[subject]} arrived {seen[subject, gene]} times "
                         "(expected once)")
