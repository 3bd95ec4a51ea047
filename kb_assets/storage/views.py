"""Views computed on demand over the shared tables: what users query, never materialized per subject."""

from __future__ import annotations

from collections.abc import Iterator

# (view name, the dataset views it reads, its query), each name a template over the encoder's view prefix ("" for
# the recipe's primary encoder, "<name>_" for a further one). Created once every dataset view it reads exists.
DERIVED_VIEWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "{p}gene_embeddings",
        ("{p}gene_embeddings_vectors", "{p}gene_embeddings_subjects", "{p}gene_embeddings_assignments"),
        # Every subject × gene: the subject's code (0, the reference's vector, unless assigned), then its vector.
        """
        select 'REF' as subject_id, v.gene_id, v.gene_name, v.gene_order, v.vector, v.chrom
        from {p}gene_embeddings_vectors v
        where v.code = 0
        union all
        select s.subject_id, g.gene_id, g.gene_name, g.gene_order, v.vector, s.chrom
        from {p}gene_embeddings_subjects s
        join {p}gene_embeddings_vectors g on g.chrom = s.chrom and g.code = 0
        left join {p}gene_embeddings_assignments a
            on a.chrom = s.chrom and a.subject_index = s.subject_index and a.gene_order = g.gene_order
        join {p}gene_embeddings_vectors v on v.gene_order = g.gene_order and v.code = coalesce(a.code, 0)
        """,
    ),
)
ANCHOR = "gene_embeddings_vectors"  # the view whose prefixes name the encoders


def derived_views(existing: set[str]) -> Iterator[tuple[str, str]]:
    """(name, query) of every derived view whose inputs are among the `existing` views, once per encoder."""
    prefixes = sorted(name.removesuffix(ANCHOR) for name in existing if name.endswith(ANCHOR))
    for prefix in prefixes:
        for name, reads, query in DERIVED_VIEWS:
            if {read.format(p=prefix) for read in reads} <= existing:
                yield name.format(p=prefix), query.format(p=prefix)
