"""Recipe diagnostics (domain code, no Dagster): RC-averaging stability, pooling comparison, BPE token report."""

from kb_assets.diagnostics.encoders import ALL_GENES, EncoderComparison, EncoderOutputs, compare_encoders
from kb_assets.diagnostics.pooling import (
    PoolingComparison,
    PoolingComparisonResult,
    cohort_subjects,
    distance_rank_agreement,
    half_split_cosine,
    half_split_cosines,
    strategy_cosines,
)
from kb_assets.diagnostics.rc_stability import RcStability, length_bin, most_moved, rc_stability
from kb_assets.diagnostics.subjects import SampledAlleles, add_squared_distances, add_subject_distances, sampled_alleles
from kb_assets.diagnostics.tokens import (
    REGION_TYPES,
    TokenReport,
    TokenTally,
    codon_frame_test,
    exon_enrichment,
    region_type_sequences,
)
from kb_assets.diagnostics.vectors import ReferenceStats, cosine, gene_table, pool_regions, reference_stats

__all__ = [
    "PoolingComparison",
    "PoolingComparisonResult",
    "SampledAlleles",
    "add_subject_distances",
    "sampled_alleles",
    "ALL_GENES",
    "EncoderComparison",
    "EncoderOutputs",
    "compare_encoders",
    "REGION_TYPES",
    "RcStability",
    "ReferenceStats",
    "TokenReport",
    "TokenTally",
    "add_squared_distances",
    "codon_frame_test",
    "cohort_subjects",
    "cosine",
    "distance_rank_agreement",
    "exon_enrichment",
    "gene_table",
    "half_split_cosine",
    "half_split_cosines",
    "length_bin",
    "most_moved",
    "pool_regions",
    "rc_stability",
    "reference_stats",
    "region_type_sequences",
    "strategy_cosines",
]
