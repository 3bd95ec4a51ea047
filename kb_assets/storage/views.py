"""The catalog's views: one per dataset (named by `view_name`), and views computed on demand over them, what users
query, never materialized per subject."""

from __future__ import annotations

from collections.abc import Iterator


def view_name(dataset: str) -> str:
    return dataset.replace("/", "_")


def quote_identifier(name: str) -> str:
    """A DuckDB identifier in double quotes, embedded quotes doubled: names never become SQL."""
    return '"' + name.replace('"', '""') + '"'


# (view name, the dataset views it reads by placeholder, its query), names given without the encoder's view prefix
# ("" for the recipe's primary encoder, "<name>_" for a further one). Created per encoder once every view it reads
# exists; the placeholders are filled with quoted identifiers.
DERIVED_VIEWS: tuple[tuple[str, dict[str, str], str], ...] = (
    (
        "gene_embeddings",
        {"vectors": "gene_embeddings_vectors", "subjects": "gene_embeddings_subjects",
         "assignments": "gene_embeddings_assignments"},
        # Every subject × gene: the subject's code (0, the reference's vector, unless assigned), then its vector.
        """
        select 'REF' as subject_id, v.gene_id, v.gene_name, v.gene_order, v.vector, v.chrom
        from {vectors} v
        where v.code = 0
        union all
        select s.subject_id, g.gene_id, g.gene_name, g.gene_order, v.vector, s.chrom
        from {subjects} s
        join {vectors} g on g.chrom = s.chrom and g.code = 0
        left join {assignments} a
            on a.chrom = s.chrom and a.subject_index = s.subject_index and a.gene_order = g.gene_order
        join {vectors} v on v.gene_order = g.gene_order and v.code = coalesce(a.code, 0)
        """,
    ),
)
ANCHOR = "gene_embeddings_vectors"  # the view whose prefixes name the encoders


def derived_views(existing: set[str]) -> Iterator[tuple[str, str]]:
    """(name, query) of every derived view whose inputs are among the `existing` views, once per encoder."""
    prefixes = sorted(name.removesuffix(ANCHOR) for name in existing if name.endswith(ANCHOR))
    for prefix in prefixes:
        for name, reads, query in DERIVED_VIEWS:
            if {prefix + read for read in reads.values()} <= existing:
                yield prefix + name, query.format(**{
                    key: quote_identifier(prefix + read) for key, read in reads.items()})
