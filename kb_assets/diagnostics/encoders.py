"""Encoders side by side (domain code, no Dagster): per gene, how each encoder's vectors move under reverse
complement (before any averaging) and between pooling strategies, and how far the encoders agree on which subjects
are alike (Spearman correlation of subject-to-subject distances, gene by gene and over the whole gene set).

The inputs are what the encoders' own diagnostics and subject matrices already hold: rc_stability and
pooling_comparison per gene, the factored subject matrix (per gene its distinct vectors and who carries which), so
comparing costs no forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from kb_assets.diagnostics.subjects import add_squared_distances
from kb_assets.errors import InputError
from kb_assets.stats.subject_matrix import GeneBlock

ALL_GENES = "all genes"


@dataclass(frozen=True)
class EncoderOutputs:
    """What one encoder's assets hold for the comparison."""

    rc_stability: pd.DataFrame  # per gene: gene_id, gene_name, chrom, cosine_forward_rc
    pooling: pd.DataFrame  # per gene × strategy pair: gene_id, strategy_a, strategy_b, cosine
    subjects: Sequence[str]  # rows of the subject matrix
    blocks: Sequence[GeneBlock]  # per gene of the subject matrix
    source: str | None = None  # where the subject matrix is stored, named in errors


@dataclass(frozen=True)
class EncoderComparison:
    genes: pd.DataFrame  # per gene × encoder: RC and pooling movement
    agreement: pd.DataFrame  # per gene (and ALL_GENES) × encoder pair: distance rank agreement
    subjects: list[str]  # the subjects whose distances were compared


def compare_encoders(encoders: Mapping[str, EncoderOutputs], max_subjects: int) -> EncoderComparison:
    """The comparison of two or more encoders on the same gene set and cohort (the first `max_subjects` subjects by
    id that every encoder's subject matrix holds)."""
    names = list(encoders)
    common = set.intersection(*(set(o.subjects) for o in encoders.values()))
    subjects = sorted(common)[:max_subjects]
    genes = _movement(encoders)
    held = [{b.gene_id for b in o.blocks} for o in encoders.values()]
    shared_genes = [b.gene_id for b in encoders[names[0]].blocks if all(b.gene_id in genes_of for genes_of in held)]
    if not shared_genes or len(subjects) < 2:
        first = encoders[names[0]]
        # The odd one out: the first encoder that shares nothing to compare with the first.
        odd = next((name for name in names[1:] if not {b.gene_id for b in encoders[name].blocks} & held[0]
                    or len(set(encoders[name].subjects) & set(first.subjects)) < 2), names[-1])
        held_by = "; ".join(f"{name}: {len(o.blocks)} genes, {len(o.subjects)} subjects"
                            for name, o in encoders.items())
        raise InputError(encoders[odd].source, f"subject_matrix of {odd}",
                         f"the encoders' subject matrices share {len(shared_genes)} genes and {len(subjects)} "
                         f"subjects ({held_by}): nothing to compare",
                         f"materialize {odd}'s subject_matrix again so that every encoder's is on the recipe's "
                         "gene set and cohort")
    gene_names = genes.drop_duplicates("gene_id").set_index("gene_id")["gene_name"]
    distances = {name: _SubjectDistances(o, subjects) for name, o in encoders.items()}
    totals = {name: np.zeros((len(subjects), len(subjects))) for name in names}
    rows = []
    # Gene by gene: memory holds one n × n matrix per encoder, whatever the number of genes.
    for gene in shared_genes:
        per_encoder = {name: distances[name].of(gene) for name in names}
        for name in names:
            totals[name] += per_encoder[name]
        for a, b in combinations(names, 2):
            rows.append({"gene_id": gene, "gene_name": gene_names.get(gene, gene), "encoder_a": a, "encoder_b": b,
                         "spearman_rho": _rank_agreement(per_encoder[a], per_encoder[b])})
    for a, b in combinations(names, 2):
        rows.append({"gene_id": ALL_GENES, "gene_name": ALL_GENES, "encoder_a": a, "encoder_b": b,
                     "spearman_rho": _rank_agreement(totals[a], totals[b])})
    agreement = pd.DataFrame(rows).assign(n_subjects=len(subjects))
    return EncoderComparison(genes=genes, agreement=agreement, subjects=subjects)


def _movement(encoders: Mapping[str, EncoderOutputs]) -> pd.DataFrame:
    """Per gene × encoder: cosine of the forward and reverse-complement vectors each embedded alone, and the
    cosine between mean and max pooling and the lowest cosine between any two of the encoder's strategies."""
    frames = []
    for name, outputs in encoders.items():
        pooling = outputs.pooling
        mean_max = pooling[(pooling["strategy_a"] == "mean") & (pooling["strategy_b"] == "max")]
        frame = outputs.rc_stability[["gene_id", "gene_name", "chrom", "cosine_forward_rc"]].merge(
            mean_max[["gene_id", "cosine"]].rename(columns={"cosine": "cosine_mean_max"}), on="gene_id", how="left")
        lowest = pooling.groupby("gene_id")["cosine"].min().rename("lowest_strategy_cosine")
        frames.append(frame.merge(lowest, left_on="gene_id", right_index=True, how="left").assign(encoder=name))
    columns = ["gene_id", "gene_name", "chrom", "encoder", "cosine_forward_rc", "cosine_mean_max",
               "lowest_strategy_cosine"]
    return pd.concat(frames, ignore_index=True)[columns]


class _SubjectDistances:
    """The squared distances between chosen subjects on one gene of an encoder's factored subject matrix."""

    def __init__(self, outputs: EncoderOutputs, subjects: list[str]):
        row_of = pd.Series(np.arange(len(outputs.subjects)), index=list(outputs.subjects))
        self.n_rows = len(outputs.subjects)
        self.rows = row_of.loc[subjects].to_numpy(np.int64)
        self.blocks = {block.gene_id: block for block in outputs.blocks}

    def of(self, gene: str) -> np.ndarray:
        """[n, n], computed among the gene's distinct vectors."""
        block = self.blocks[gene]
        codes = np.zeros(self.n_rows, np.int64)
        codes[block.rows] = block.codes
        total = np.zeros((len(self.rows), len(self.rows)))
        add_squared_distances(total, block.vectors[codes[self.rows]])
        return total


def _rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ of two distance matrices' upper triangles; NaN when either has no spread."""
    upper = np.triu_indices(len(a), k=1)
    x, y = a[upper], b[upper]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)
