"""Views computed on demand over the shared tables: what users query, never materialized per subject."""

from __future__ import annotations

# (view name, the dataset views it reads, its query). Created once every dataset view it reads exists.
DERIVED_VIEWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "gene_embeddings",
        ("gene_embeddings_vectors", "gene_embeddings_subjects", "gene_embeddings_assignments"),
        # Every subject × gene: the subject's code (0, the reference's vector, unless assigned), then its vector.
        """
        select 'REF' as subject_id, v.gene_id, v.gene_name, v.gene_order, v.vector, v.chrom
        from gene_embeddings_vectors v
        where v.code = 0
        union all
        select s.subject_id, g.gene_id, g.gene_name, g.gene_order, v.vector, s.chrom
        from gene_embeddings_subjects s
        join gene_embeddings_vectors g on g.chrom = s.chrom and g.code = 0
        left join gene_embeddings_assignments a
            on a.chrom = s.chrom and a.subject_index = s.subject_index and a.gene_order = g.gene_order
        join gene_embeddings_vectors v on v.gene_order = g.gene_order and v.code = coalesce(a.code, 0)
        """,
    ),
)
