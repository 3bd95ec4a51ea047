"""The sampled subjects of a pooling comparison: only their rows of the sparse haplotype tables and the windows of
the alleles they carry are read (a 470,000-subject cohort costs what its first 500 subjects cost), their region
alleles pooled through the embedding cache, and their gene-by-gene distances added up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform

from kb_assets.encoders.alleles import AlleleStats, allele_stats
from kb_assets.encoders.engine import WindowBatch
from kb_assets.encoders.gene_pooling import RegionToGene, pool_genes
from kb_assets.encoders.pooling import Pooling
from kb_assets.encoders.tokenized import model_windows
from kb_assets.encoders.windows import ModelWindow
from kb_assets.storage import EmbeddingCache, Warehouse

Embedder = Callable[[list[ModelWindow]], Iterable[WindowBatch]]


def add_squared_distances(total: np.ndarray, vectors: np.ndarray) -> None:
    """Add the squared Euclidean distances between the rows of `vectors` [N, d] to `total` [N, N].

    Distances are computed among distinct rows only, so subjects with identical vectors (same alleles) stay exactly
    0 apart, and summing blocks (genes) gives the distance between the blocks' concatenations.
    """
    distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
    if len(distinct) > 1:
        between = squareform(pdist(distinct.astype(np.float64), "sqeuclidean"))
        inverse = inverse.reshape(-1)
        total += between[np.ix_(inverse, inverse)]


@dataclass(frozen=True)
class SampledAlleles:
    """The alleles the sampled subjects carry on one chromosome, their statistics, and who carries which."""

    alleles: pd.DataFrame  # region_id, allele
    stats: AlleleStats
    assignments: pd.DataFrame  # subject_index, region_id, haplotype, allele (sampled subjects only)
    subject_indices: np.ndarray  # sorted
    row_subject_index: np.ndarray  # subject_index of each row of the distance matrix (subjects as given)
    ploidy: int


def sampled_alleles(store: Warehouse, chrom: str, subjects: list[str], tokenized: str, kept_subjects: str,
                    cache: EmbeddingCache, embed: Embedder, hidden_size: int, both_strands: bool) -> SampledAlleles:
    """The sampled `subjects`' alleles on `chrom`: `tokenized` names the encoder's tokenized_genes dataset and
    `kept_subjects` its gene_embeddings/subjects dataset; windows the cache lacks are embedded with `embed`."""
    kept = store.read_partition(kept_subjects, chrom).to_pandas()
    index_of = kept.set_index("subject_id")["subject_index"]
    rows = index_of.reindex(subjects).to_numpy(np.int64)
    indices = np.sort(rows)
    assignments = store.read_partition("subject_haplotypes/assignments", chrom,
                                       filters=[("subject_index", "in", indices.tolist())]).to_pandas()
    allele_tiles = store.read_partition(f"{tokenized}/allele_tiles", chrom).to_pandas()
    carried = set(zip(assignments["region_id"].astype(str), assignments["allele"]))
    needed = allele_tiles[(allele_tiles["allele"] == 0) | pd.Series(
        list(zip(allele_tiles["region_id"], allele_tiles["allele"]))).isin(carried).to_numpy()].reset_index(drop=True)
    tile_numbers = sorted({int(t) for tiles in needed["tiles"] for t in tiles})
    windows = store.read_partition(tokenized, chrom, filters=[("tile", "in", tile_numbers)])
    window_stats, _ = cache.fill(model_windows(windows), hidden_size, embed)
    local = pd.Series(np.arange(len(tile_numbers)), index=tile_numbers)
    frame = windows.select(["tile", "reverse_complement"]).to_pandas()
    frame["tile"] = local.reindex(frame["tile"]).to_numpy()
    stats = allele_stats(frame, window_stats, needed["tiles"].map(lambda t: local.reindex(list(t)).tolist()),
                         len(tile_numbers), both_strands)
    ploidy = store.read_facts("subject_haplotypes/assignments", chrom)["ploidy"]
    return SampledAlleles(needed[["region_id", "allele"]], stats, assignments, indices, rows, ploidy)


def add_subject_distances(total: np.ndarray, regions: pd.DataFrame, sample: SampledAlleles, pooling: Pooling,
                          region_to_gene: RegionToGene) -> None:
    """Add one chromosome's gene-by-gene squared distances between the sampled subjects (rows of `total`)."""
    if not len(sample.row_subject_index):
        return
    genes = pool_genes(regions, sample.alleles, sample.stats.vectors(pooling), sample.stats.forward.counts == 0,
                       sample.assignments, sample.subject_indices, sample.ploidy, region_to_gene)
    # The assignments grouped by gene once: filtering them per gene would cost genes × assignments.
    carriers_of_gene = genes.assignments.groupby("gene_order").indices
    subject_indices = genes.assignments["subject_index"].to_numpy()
    codes = genes.assignments["code"].to_numpy()
    for gene_order, gene_rows in genes.vectors.groupby("gene_order", sort=True):
        matrix = genes.matrix[gene_rows.sort_values("code").index.to_numpy()]
        carried = carriers_of_gene.get(gene_order, np.empty(0, np.int64))
        code_of_subject = pd.Series(codes[carried], index=subject_indices[carried])
        add_squared_distances(
            total, matrix[code_of_subject.reindex(sample.row_subject_index, fill_value=0).to_numpy(np.int64)])
