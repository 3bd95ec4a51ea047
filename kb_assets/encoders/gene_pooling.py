"""Region allele vectors → gene vectors per subject, stored as what subjects share.

A subject's haplotype of a gene is the tuple of the region alleles it carries; its vector is the weighted mean of
those region vectors. A subject's gene vector is the mean over its haplotypes (one, or two when phased). Subjects
carrying the same haplotypes share one vector, so each gene keeps a few distinct vectors — code 0 is the reference's,
every subject not listed carries it — and a sparse (subject, code) list for the others.

Empty regions: a region allele with no counted token (a deletion removed the region, or it is all N) contributes
nothing; the haplotype's gene vector is the weighted mean over its remaining regions (weights renormalized). A
haplotype with every region empty contributes nothing to its subject; a subject whose haplotypes are all empty gets
the zero vector and the flag `all_regions_deleted`.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class GeneVectors:
    """The distinct gene vectors of one chromosome and who carries which."""

    vectors: pd.DataFrame  # gene_id, gene_name, gene_order, code, n_subjects, all_regions_deleted; row i ↔ matrix[i]
    matrix: np.ndarray  # [len(vectors), H] float32
    assignments: pd.DataFrame  # subject_index (int32), gene_order (int32), code (int32 ≥ 1)
    empty_region_haplotypes: int  # subject × region × haplotype units whose allele has no counted token


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix (SplitMix64's finalizer): distinct inputs give effectively independent outputs."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pool_genes(
    regions: pd.DataFrame,
    alleles: pd.DataFrame,
    allele_vectors: np.ndarray,
    empty: np.ndarray,
    assignments: pd.DataFrame,
    subject_indices: np.ndarray,
    ploidy: int,
    region_to_gene: RegionToGene,
) -> GeneVectors:
    """Gene vectors of every kept subject.

    regions: region_id, gene_id, gene_name, gene_order, length (the reference regions of the chromosome).
    alleles / allele_vectors / empty: region_id, allele (0 = reference), each allele's vector and whether it counted
    no token, row for row (a NaN in a non-empty allele's vector is carried into the gene vectors, where the finite
    check finds it). assignments: subject_index, region_id, haplotype, allele (non-reference units only).
    subject_indices: the subjects to pool (kept ones, ascending); each one not in `assignments` is the reference.
    """
    subject_indices = np.asarray(subject_indices, dtype=np.int64)
    allele_index = pd.MultiIndex.from_arrays([alleles["region_id"].astype(str), alleles["allele"].astype(np.int64)])
    empty = np.asarray(empty, dtype=bool)
    filled = np.where(empty[:, None], 0.0, allele_vectors.astype(np.float64))
    weights = region_weights(regions, region_to_gene)
    allele_weight = np.where(empty, 0.0, weights.reindex(alleles["region_id"].astype(str)).to_numpy())
    contributions = filled * allele_weight[:, None]
    # Row of each allele's region's reference allele (allele 0).
    reference_row_of = allele_index.get_indexer(pd.MultiIndex.from_arrays(
        [alleles["region_id"].astype(str), np.zeros(len(alleles), dtype=np.int64)]))
    if (reference_row_of < 0).any():
        raise ValueError("every region needs its reference allele (allele 0) among the alleles")

    rows = assignments.assign(region_id=assignments["region_id"].astype(str))
    # Kept subjects' units, found by binary search in the sorted kept subjects: nothing of the cohort's size.
    listed = rows["subject_index"].to_numpy(np.int64)
    at = np.searchsorted(subject_indices, listed)
    kept = at < len(subject_indices)
    kept[kept] = subject_indices[at[kept]] == listed[kept]
    rows = rows[kept]
    rows = rows.assign(allele_row=allele_index.get_indexer(pd.MultiIndex.from_arrays(
        [rows["region_id"], rows["allele"].astype(np.int64)])))
    if (rows["allele_row"] < 0).any():
        missing = rows.loc[rows["allele_row"] < 0].iloc[0]
        raise ValueError(f"no vector for allele {missing['allele']} of region {missing['region_id']}")
    empty_units = int(empty[rows["allele_row"].to_numpy()].sum())

    genes = regions.drop_duplicates("gene_id").sort_values("gene_order")
    region_ids = regions["region_id"].astype(str)
    regions_of_gene = region_ids.groupby(regions["gene_id"], sort=False).indices
    rows_of_gene = rows.groupby(rows["region_id"].map(pd.Series(regions["gene_id"].to_numpy(), index=region_ids)),
                                sort=False).indices
    vector_parts, matrix_parts, assignment_parts = [], [], []
    for gene in genes.itertuples():
        gene_regions = region_ids.to_numpy()[regions_of_gene[gene.gene_id]]
        reference_rows = allele_index.get_indexer(pd.MultiIndex.from_arrays(
            [gene_regions, np.zeros(len(gene_regions), dtype=np.int64)]))
        gene_rows = rows.iloc[rows_of_gene.get(gene.gene_id, np.empty(0, np.int64))]
        table, matrix, carriers, codes = _pool_gene(gene_rows, reference_rows, reference_row_of, contributions,
                                                    allele_weight, len(subject_indices), ploidy)
        table.insert(0, "gene_order", np.int32(gene.gene_order))
        table.insert(0, "gene_name", gene.gene_name)
        table.insert(0, "gene_id", gene.gene_id)
        vector_parts.append(table)
        matrix_parts.append(matrix)
        assignment_parts.append(pd.DataFrame({
            "subject_index": carriers.astype(np.int32),
            "gene_order": np.full(len(carriers), gene.gene_order, dtype=np.int32),
            "code": codes.astype(np.int32),
        }))
    hidden = allele_vectors.shape[1]
    vectors = pd.concat(vector_parts, ignore_index=True) if vector_parts else pd.DataFrame(
        columns=["gene_id", "gene_name", "gene_order", "code", "n_subjects", "all_regions_deleted"])
    return GeneVectors(
        vectors=vectors,
        matrix=np.vstack(matrix_parts) if matrix_parts else np.zeros((0, hidden), np.float32),
        assignments=pd.concat(assignment_parts, ignore_index=True) if assignment_parts else pd.DataFrame(
            {"subject_index": pd.Series(dtype=np.int32), "gene_order": pd.Series(dtype=np.int32),
             "code": pd.Series(dtype=np.int32)}),
        empty_region_haplotypes=empty_units,
    )


def _pool_gene(rows: pd.DataFrame, reference_rows: np.ndarray, reference_row_of: np.ndarray,
               contributions: np.ndarray, allele_weight: np.ndarray, n_subjects_kept: int,
               ploidy: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """One gene: its distinct subject vectors (code 0 = the reference), the subjects that carry another (ascending
    subject indices) and their codes (≥ 1). The work follows the carriers: every other kept subject is counted
    under code 0, never listed."""
    # Haplotype units that differ from the reference, grouped by the alleles they carry: a unit's pattern is the
    # wrapping sum of a fixed 128-bit mix of each (allele row) it carries, equal exactly when the sets are equal.
    units = rows["subject_index"].to_numpy(np.int64) * ploidy + rows["haplotype"].to_numpy(np.int64)
    allele_rows = rows["allele_row"].to_numpy(np.int64)
    mixed = np.stack([_splitmix64(allele_rows), _splitmix64(allele_rows ^ 0x5DEECE66D)], axis=1)
    touched, unit_of_row = np.unique(units, return_inverse=True)
    pattern = np.zeros((len(touched), 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(pattern, unit_of_row, mixed)
    _, first_of_haplotype, haplotype_of_unit = np.unique(pattern, axis=0, return_index=True, return_inverse=True)
    haplotype_of_unit = haplotype_of_unit.ravel() + 1  # 0 is the reference haplotype
    n_haplotypes = len(first_of_haplotype) + 1

    # Each haplotype's weighted sum and weight: the reference's, with its changed regions swapped for its alleles.
    representative = touched[first_of_haplotype]
    of_representative = np.isin(units, representative)
    row_haplotype = haplotype_of_unit[unit_of_row[of_representative]]
    changed = allele_rows[of_representative]
    reference_of_changed = reference_row_of[changed]
    swap = sp.csr_matrix(
        (np.r_[np.ones(len(changed)), -np.ones(len(changed))],
         (np.r_[row_haplotype, row_haplotype], np.r_[changed, reference_of_changed])),
        shape=(n_haplotypes, len(contributions)))
    sums = contributions[reference_rows].sum(axis=0) + swap @ contributions
    # A haplotype keeps a region when its allele counted tokens; rounding leaves no exact zero otherwise.
    totals = np.round(allele_weight[reference_rows].sum() + swap @ allele_weight, 12)
    with np.errstate(invalid="ignore", divide="ignore"):
        haplotype_vectors = sums / np.where(totals > 0, totals, 1.0)[:, None]

    # Carriers: their haplotypes (0 when untouched), as an unordered pair when phased.
    carriers, carrier_of_unit = np.unique(touched // ploidy, return_inverse=True)
    carrier_haplotypes = np.zeros((len(carriers), ploidy), dtype=np.int64)
    carrier_haplotypes[carrier_of_unit, touched % ploidy] = haplotype_of_unit
    carrier_haplotypes.sort(axis=1)
    combinations, codes = np.unique(
        np.vstack([np.zeros((1, ploidy), dtype=np.int64), carrier_haplotypes]), axis=0, return_inverse=True)
    codes = codes.ravel()[1:]  # the prepended reference row made combination 0 the reference
    n_subjects = np.bincount(codes, minlength=len(combinations))
    n_subjects[0] = n_subjects_kept - len(carriers)  # a carrier has a non-reference haplotype, so never code 0
    present = totals[combinations] > 0  # [codes, ploidy]
    stacked = np.where(present[..., None], haplotype_vectors[combinations], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vectors = stacked.sum(axis=1) / present.sum(axis=1, keepdims=True)
    deleted = ~present.any(axis=1)
    vectors[deleted] = 0.0
    table = pd.DataFrame({"code": np.arange(len(combinations), dtype=np.int32), "n_subjects": n_subjects,
                          "all_regions_deleted": deleted})
    return table, vectors.astype(np.float32), carriers, codes
