"""Sequence vectors → gene vectors per subject: haplotypes averaged, then regions pooled per gene.

Subjects × regions × haplotypes can run to millions of rows for a cohort, while the distinct sequences are few:
the pooling is one sparse (subject·gene × sequence) weight matrix times the sequence vectors, so no
per-subject region vector is ever held in memory.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

RegionToGene = Literal["mean", "length_weighted"]
REGION_TO_GENE = ("mean", "length_weighted")


def region_weights(regions: pd.DataFrame, region_to_gene: RegionToGene) -> pd.Series:
    """Each region's share of its gene's vector (sums to 1 per gene), indexed by region_id.

    `length_weighted` weighs a region by its reference length, so a subject's indel does not re-weigh its gene.
    """
    if region_to_gene not in REGION_TO_GENE:
        raise ValueError(f"region_to_gene must be one of {REGION_TO_GENE}, got {region_to_gene!r}")
    size = regions["length"].astype(np.float64) if region_to_gene == "length_weighted" else pd.Series(
        1.0, index=regions.index)
    weights = size / size.groupby(regions["gene_id"]).transform("sum")
    return pd.Series(weights.to_numpy(), index=regions["region_id"].to_numpy())


def pool_genes(
    assignments: pd.DataFrame,
    regions: pd.DataFrame,
    sequence_ids: pd.Index,
    vectors: np.ndarray,
    region_to_gene: RegionToGene,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Gene vectors of every subject.

    assignments: subject_id, region_id, haplotype, sequence_id (one row per subject × region × haplotype).
    regions: region_id, gene_id, gene_name, gene_order, length (the reference regions).
    sequence_ids / vectors: the vector of each sequence id, row for row.
    Returns (keys: subject_id, gene_id, gene_name, gene_order in subject-then-gene-order order, [n, H] float32).
    """
    # Summation order decides float rounding: columns sorted by sequence id make the result independent of the
    # order the vectors arrived in (freshly embedded or from the cache), so identical inputs give identical bytes.
    order = np.argsort(np.asarray(sequence_ids, dtype=str), kind="stable")
    sequence_ids, vectors = pd.Index(np.asarray(sequence_ids)[order]), vectors[order]
    subject_order = pd.unique(assignments["subject_id"].astype(str))
    genes = regions.drop_duplicates("gene_id").sort_values("gene_order")[["gene_id", "gene_name", "gene_order"]]
    gene_position = pd.Series(np.arange(len(genes)), index=genes["gene_id"].to_numpy())
    region_gene = pd.Series(regions["gene_id"].to_numpy(), index=regions["region_id"].to_numpy())

    region_ids = assignments["region_id"].astype(str).to_numpy()
    subject_position = pd.Index(subject_order).get_indexer(assignments["subject_id"].astype(str))
    column = sequence_ids.get_indexer(assignments["sequence_id"].astype(str))
    if (column < 0).any():
        missing = assignments["sequence_id"].astype(str)[column < 0].iloc[0]
        raise ValueError(f"no vector for sequence {missing}")
    # Haplotypes of one subject and region share the region's weight equally.
    pair = pd.Series(subject_position).astype(np.int64) * (len(regions) + 1) + pd.Index(
        regions["region_id"]).get_indexer(region_ids)
    haplotype_share = 1.0 / pair.map(pair.value_counts()).to_numpy()
    weight = region_weights(regions, region_to_gene).reindex(region_ids).to_numpy() * haplotype_share
    row = subject_position * len(genes) + gene_position.reindex(region_gene.reindex(region_ids)).to_numpy()

    pooling = sp.csr_matrix((weight, (row, column)), shape=(len(subject_order) * len(genes), len(sequence_ids)))
    gene_vectors = np.asarray(pooling.astype(np.float32) @ vectors, dtype=np.float32)
    keys = pd.DataFrame({
        "subject_id": np.repeat(subject_order, len(genes)),
        "gene_id": np.tile(genes["gene_id"].to_numpy(), len(subject_order)),
        "gene_name": np.tile(genes["gene_name"].to_numpy(), len(subject_order)),
        "gene_order": np.tile(genes["gene_order"].to_numpy(), len(subject_order)),
    })
    return keys, gene_vectors
