"""The subject matrix as what subjects share, assembled from the gene_embeddings partitions: per gene of the gene set,
its few distinct vectors and which subjects (rows) differ from the reference's (kb_assets.stats.subject_matrix
computes with them); nothing of size subjects × genes × H is formed here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from kb_assets.errors import InputError
from kb_assets.stats.subject_matrix import GeneBlock
from kb_assets.storage.vectors import vector_column


@dataclass(frozen=True)
class ChromosomeVectors:
    """One gene_embeddings partition as stored."""

    chrom: str
    vectors: pd.DataFrame  # gene_id, gene_name, gene_order, code (+ anything else)
    matrix: np.ndarray  # [len(vectors), H]
    assignments: pd.DataFrame  # subject_index, gene_order, code
    subjects: pd.DataFrame  # subject_index, subject_id (kept subjects)


def shared_settings(facts: Mapping[str, Mapping[str, Mapping[str, object]]], keys: Sequence[str], newest: str,
                    source: str) -> dict:
    """The values of `keys` that every partition's files share (facts: partition → file → facts).

    The files of one partition must agree (a run stopped while renaming them leaves a mix), and so must the
    partitions: vectors of two models, tokenizers, poolings or device kinds cannot share one matrix. The error names
    the partitions made otherwise than the `newest`, the ones to redo.
    """
    by_partition = {}
    for partition, files in facts.items():
        values = {tuple(file.get(key) for key in keys) for file in files.values()}
        if len(values) != 1 or len({file.get("write_id") for file in files.values()}) != 1:
            raise InputError(source, f"partition {partition}",
                             "its files were written by different runs (a run stopped while replacing them)",
                             f"re-materialize gene_embeddings for {partition}")
        by_partition[partition] = dict(zip(keys, values.pop()))
    for key in keys:
        holders: dict[object, list[str]] = {}
        for partition, values in by_partition.items():
            holders.setdefault(values[key], []).append(partition)
        if len(holders) > 1:
            stale = sorted(p for p, values in by_partition.items() if values[key] != by_partition[newest][key])
            listed = "; ".join(f"{str(value)[:16]} in {', '.join(sorted(ps))}" for value, ps in holders.items())
            raise InputError(
                source, f"{key}: {listed}",
                f"gene_embeddings partitions were made with different {key} values and cannot share one matrix",
                f"re-materialize gene_embeddings for {', '.join(stale)} with the current checkpoint and recipe",
            )
    return by_partition[newest] if by_partition else {}


def analysis_subjects(covariate_subjects: Iterable[str], partitions: Iterable[pd.DataFrame]) -> tuple[pd.Index, int]:
    """The subjects in the covariates table that every partition kept, in covariates order; and how many covariates
    subjects are missing from some partition."""
    wanted = list(covariate_subjects)
    present = set(wanted)
    for subjects in partitions:
        present &= set(subjects["subject_id"])
    return pd.Index([s for s in wanted if s in present]), len(wanted) - len(present)


def assemble_gene_blocks(subjects: pd.Index, genes: pd.DataFrame, partitions: Iterable[ChromosomeVectors],
                         source: str) -> tuple[list[GeneBlock], pd.DataFrame]:
    """The gene blocks of `genes` (gene_id, gene_order; manifest order) for the rows `subjects`, and a table of them
    (gene_index, gene_id, gene_name, chrom, n_vectors, rows_not_reference).

    `source` names the dataset in errors. Every gene must have its reference vector (code 0) in some partition.
    """
    blocks: dict[str, tuple[GeneBlock, str, str]] = {}
    row_of_subject = pd.Series(np.arange(len(subjects), dtype=np.int64), index=subjects)
    for part in partitions:
        rows_of_index = row_of_subject.reindex(part.subjects["subject_id"]).to_numpy()
        row_of_index = pd.Series(rows_of_index, index=part.subjects["subject_index"].to_numpy())
        assignments_of_gene = part.assignments.groupby("gene_order").indices
        subject_indices = part.assignments["subject_index"].to_numpy()
        codes = part.assignments["code"].to_numpy(np.int32)
        for gene_order, gene_vectors in part.vectors.groupby("gene_order", sort=True):
            ordered = gene_vectors.sort_values("code")
            if ordered["code"].iloc[0] != 0 or not (ordered["code"].to_numpy() == np.arange(len(ordered))).all():
                raise InputError(source, f"{part.chrom}, gene {ordered['gene_id'].iloc[0]}",
                                 "the gene's vector codes are not 0..n-1", f"materialize gene_embeddings for "
                                 f"{part.chrom} again")
            carried = assignments_of_gene.get(gene_order, np.empty(0, np.int64))
            rows = row_of_index.reindex(subject_indices[carried]).to_numpy()
            kept = ~np.isnan(rows)
            order = np.argsort(rows[kept], kind="stable")
            gene_id = str(ordered["gene_id"].iloc[0])
            block = GeneBlock(
                gene_id=gene_id,
                vectors=np.ascontiguousarray(part.matrix[ordered.index.to_numpy()], dtype=np.float32),
                rows=rows[kept].astype(np.int64)[order],
                codes=codes[carried][kept][order],
            )
            blocks[gene_id] = (block, str(ordered["gene_name"].iloc[0]), part.chrom)
    missing = [g for g in genes["gene_id"] if g not in blocks]
    if missing:
        raise InputError(source, f"genes {', '.join(missing[:5])}", "have no gene vectors",
                         "materialize gene_embeddings for their chromosomes")
    chosen = [blocks[g] for g in genes["gene_id"]]
    table = pd.DataFrame({
        "gene_index": np.arange(len(chosen), dtype=np.int32),
        "gene_id": [b.gene_id for b, _, _ in chosen],
        "gene_name": [name for _, name, _ in chosen],
        "chrom": [chrom for _, _, chrom in chosen],
        "n_vectors": np.array([len(b.vectors) for b, _, _ in chosen], dtype=np.int32),
        "rows_not_reference": np.array([len(b.rows) for b, _, _ in chosen], dtype=np.int64),
    })
    return [b for b, _, _ in chosen], table


def gene_block_tables(dataset: str, subjects: Sequence[str], gene_table: pd.DataFrame,
                      blocks: Sequence[GeneBlock]) -> dict[str, pa.Table]:
    """The blocks as subject_matrix stores them under `dataset`, read back by `read_gene_blocks`: the rows
    (row, subject_id), `dataset`/genes (the gene table of `assemble_gene_blocks`), `dataset`/vectors (gene_index,
    code, vector) and `dataset`/assignments (row, gene_index, code)."""
    gene_index = np.arange(len(blocks))
    vectors = pa.table({
        "gene_index": pa.array(np.repeat(gene_index, [len(b.vectors) for b in blocks]), pa.int32()),
        "code": pa.array(np.concatenate([np.arange(len(b.vectors)) for b in blocks]), pa.int32()),
        "vector": vector_column(np.vstack([b.vectors for b in blocks])),
    })
    assignments = pa.table({
        "row": pa.array(np.concatenate([b.rows for b in blocks]), pa.int32()),
        "gene_index": pa.array(np.repeat(gene_index, [len(b.rows) for b in blocks]), pa.int32()),
        "code": pa.array(np.concatenate([b.codes for b in blocks]), pa.int32()),
    })
    rows = pa.table({"row": pa.array(np.arange(len(subjects)), pa.int32()),
                     "subject_id": pa.array(subjects, pa.string())})
    return {dataset: rows, f"{dataset}/genes": pa.Table.from_pandas(gene_table, preserve_index=False),
            f"{dataset}/vectors": vectors, f"{dataset}/assignments": assignments}


def read_gene_blocks(genes: pd.DataFrame, vectors: pd.DataFrame, matrix: np.ndarray,
                     assignments: pd.DataFrame) -> list[GeneBlock]:
    """The blocks as subject_matrix stores them: its gene table, vectors (gene_index, code ↔ matrix rows) and
    assignments (row, gene_index, code)."""
    blocks = []
    by_gene_vectors = vectors.groupby("gene_index").indices
    by_gene_rows = assignments.groupby("gene_index").indices
    for gene in genes.itertuples():
        at = by_gene_vectors[gene.gene_index]
        ordered = at[np.argsort(vectors["code"].to_numpy()[at])]
        rows = by_gene_rows.get(gene.gene_index, np.empty(0, np.int64))
        order = np.argsort(assignments["row"].to_numpy()[rows], kind="stable")
        blocks.append(GeneBlock(gene_id=gene.gene_id, vectors=matrix[ordered],
                                rows=assignments["row"].to_numpy(np.int64)[rows][order],
                                codes=assignments["code"].to_numpy(np.int32)[rows][order]))
    return blocks
