"""tokenized_genes and gene_embeddings: per chromosome, every distinct sequence tokenized and embedded once,
then pooled into one vector per gene for REF and every subject."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
from collections import Counter

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from kb_assets.assets.publishing import ANNOTATION_FACTS, REFERENCE_FACTS, png_markdown, publish, upstream_facts
from kb_assets.diagnostics.plots import cosine_histogram_png, token_length_png
from kb_assets.encoders.engine import cut_windows
from kb_assets.encoders.gene_pooling import pool_genes
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.errors import InputError
from kb_assets.fingerprint import text_sha256
from kb_assets.genome import reverse_complement
from kb_assets.resources import EncoderResource, RecipeResource, WarehouseResource
from kb_assets.settings import EncoderSettings, Recipe
from kb_assets.storage import EmbeddingCache, EmbeddingKey, vector_column

CODE_VERSION = "1"
GROUP = "embeddings"
TOP_TOKENS = 15
RC_CHECK_SAMPLE = 4
RC_CHECK_TOLERANCE = 1e-4  # max |Δ| relative to the vector's largest |value|
LINEAGE_FACTS = REFERENCE_FACTS + ANNOTATION_FACTS + ("haplotype_mode",)


def _top_tokens_markdown(counts: Counter, tokenizer) -> str:
    total = sum(counts.values()) or 1
    lines = ["| token | id | count | share |", "|---|---|---:|---:|"]
    lines += [
        f"| `{tokenizer.id_to_token(token_id)}` | {token_id} | {count:,} | {count / total:.2%} |"
        for token_id, count in counts.most_common(TOP_TOKENS)
    ]
    return "\n".join(lines)


def embedding_key(identity: CheckpointIdentity, options: EncoderSettings) -> EmbeddingKey:
    """The cache key of the vectors this checkpoint and these encoder settings make."""
    return EmbeddingKey(identity.model_sha256, identity.tokenizer_version, options.rc, options.pooling,
                        options.window_tokens, options.window_overlap, identity.dtype)


def _forward_token_counts(windows) -> Counter:
    """Token ids of each forward sequence, counting the tokens that consecutive windows share once."""
    counts: Counter = Counter()
    counted_until: dict[int, int] = {}
    for w in windows:
        if w.reverse_complement:
            continue
        first_new = max(w.window.token_start, counted_until.get(w.sequence_index, 0))
        counts.update(w.window.input_ids[1:-1][first_new - w.window.token_start:])
        counted_until[w.sequence_index] = w.window.token_end
    return counts


def _token_length_table(counts: Counter, tokenizer, label: str) -> pd.DataFrame:
    """Share of tokens by their length in bases, for the token length plot."""
    lengths = Counter()
    for token_id, count in counts.items():
        lengths[len(tokenizer.id_to_token(token_id))] += count
    total = sum(lengths.values()) or 1
    return pd.DataFrame({"region_type": label, "length_bp": sorted(lengths),
                         "share": [lengths[n] / total for n in sorted(lengths)]})


def _rc_check_sample(regions: pd.DataFrame) -> list[str]:
    """A few reference region sequences, chosen by content so reruns check the same ones."""
    sequences = sorted(set(regions["sequence"]), key=text_sha256)
    return sequences[:RC_CHECK_SAMPLE]


def build_embedding_assets(
    recipe: Recipe, chromosomes: dg.PartitionsDefinition, reference_sequences, subject_haplotypes
) -> list:
    encoder_fingerprint = recipe.fingerprint("reference", "regions", "haplotypes", "encoder")
    pinned_tokenizer = recipe.encoder.tokenizer_sha256

    @dg.asset(
        group_name=GROUP, code_version=f"{CODE_VERSION}-{encoder_fingerprint}", deps=[subject_haplotypes],
        partitions_def=chromosomes, kinds={"parquet"},
        check_specs=[dg.AssetCheckSpec(
            "tokenizer_unchanged", asset="tokenized_genes", blocking=pinned_tokenizer is not None,
            description="tokenizer.json hash equals the recipe's encoder.tokenizer_sha256 when pinned, else the "
                        "hash this partition was last tokenized with",
        )],
    )
    def tokenized_genes(
        context: dg.AssetExecutionContext, recipe: RecipeResource, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Token windows of every distinct sequence of the partition (and of its reverse complement when RC
        averaging is on), as the encoder cuts them: ≤ window_tokens ids with [CLS]/[SEP], set overlap."""
        settings = recipe.settings()
        options = settings.encoder
        store = warehouse.get()
        chrom = context.partition_key
        previous = upstream_facts(store, "tokenized_genes", ("tokenizer_version",), chrom).get("tokenizer_version")
        tokenizer = encoder.identity().tokenizer
        sequences = store.read_partition("subject_haplotypes/sequences", chrom).to_pandas()
        windows = cut_windows(tokenizer, sequences["sequence"].tolist(), options.rc, options.window_tokens,
                              options.window_overlap) if len(sequences) else []

        sequence_ids = sequences["sequence_id"].to_numpy()
        table = pa.table({
            "sequence_id": pa.array([sequence_ids[w.sequence_index] for w in windows], pa.string()),
            "strand": pa.array(["reverse_complement" if w.reverse_complement else "forward" for w in windows],
                               pa.string()),
            "token_start": pa.array([w.window.token_start for w in windows], pa.int32()),
            "token_end": pa.array([w.window.token_end for w in windows], pa.int32()),
            "weight": pa.array([w.window.weight for w in windows], pa.float64()),
            "input_ids": pa.array([w.window.input_ids for w in windows], pa.list_(pa.uint16())),
        })
        token_counts = _forward_token_counts(windows)
        sequence_tokens = sum(token_counts.values())
        version = tokenizer.version
        expected = pinned_tokenizer or previous or version
        check = dg.AssetCheckResult(
            check_name="tokenizer_unchanged", passed=version == expected,
            severity=dg.AssetCheckSeverity.ERROR if pinned_tokenizer else dg.AssetCheckSeverity.WARN,
            metadata={"tokenizer_version": version, "expected": expected,
                      "compared_with": "recipe pin" if pinned_tokenizer else "previous materialization"},
        )
        return publish(
            context, store, settings, {"tokenized_genes": table},
            facts={
                "tokenizer_version": version,
                "bpe_vocab_size": tokenizer.vocab_size,
                "bp_per_token": round(sequences["length"].sum() / sequence_tokens, 4) if sequence_tokens else 0.0,
                "n_windows": len(windows),
                "max_tokens": max((len(w.window.input_ids) for w in windows), default=0),
                "window_tokens": options.window_tokens,
                "window_overlap": options.window_overlap,
                "rc_mode": options.rc,
                **upstream_facts(store, "subject_haplotypes", LINEAGE_FACTS, chrom),
            },
            metadata={
                "n_sequences": len(sequences),
                "top_tokens": dg.MetadataValue.md(_top_tokens_markdown(token_counts, tokenizer)),
                "token_lengths": png_markdown(
                    token_length_png(_token_length_table(token_counts, tokenizer, f"{chrom} sequences")),
                    f"token length distribution ({chrom}, forward strands)",
                ) if token_counts else "no tokens",
            },
            inputs={"tokenizer": {"path": str(tokenizer.path), "sha256": version}},
            upstream=[("subject_haplotypes", chrom)],
            check_results=[check],
        )

    @dg.asset(
        group_name=GROUP, code_version=f"{CODE_VERSION}-{recipe.fingerprint('aggregation')}-{encoder_fingerprint}",
        deps=[tokenized_genes, subject_haplotypes, reference_sequences], partitions_def=chromosomes, pool="gpu",
        kinds={"pytorch", "parquet"},
        check_specs=[
            dg.AssetCheckSpec("vectors_finite_and_complete", asset="gene_embeddings", blocking=True,
                              description="every vector finite, one per subject (and REF) × gene, width H"),
            dg.AssetCheckSpec("rc_invariance", asset="gene_embeddings",
                              description="a sample of regions embeds like its reverse complement"),
        ],
    )
    def gene_embeddings(
        context: dg.AssetExecutionContext, recipe: RecipeResource, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """One vector per gene for REF and every subject: each distinct sequence embedded once (forward and
        reverse complement averaged, pooled per the recipe, cached), haplotypes averaged, regions pooled per gene."""
        settings = recipe.settings()
        options = settings.encoder
        store = warehouse.get()
        chrom = context.partition_key
        identity = encoder.identity()
        tokenized_with = upstream_facts(store, "tokenized_genes", ("tokenizer_version",), chrom).get(
            "tokenizer_version")
        if tokenized_with != identity.tokenizer_version:
            raise InputError(
                identity.tokenizer.path, f"partition {chrom}",
                f"the checkpoint's tokenizer ({identity.tokenizer_version[:12]}) is not the one tokenized_genes "
                f"was materialized with ({(tokenized_with or 'none')[:12]})",
                f"materialize tokenized_genes for {chrom} again, then gene_embeddings",
            )
        assignments = store.read_partition("subject_haplotypes/assignments", chrom).to_pandas()
        sequences = store.read_partition("subject_haplotypes/sequences", chrom).to_pandas()
        regions = store.read_partition(
            "reference_sequences", chrom, columns=["region_id", "gene_id", "gene_name", "gene_order", "length",
                                                   "sequence"]).to_pandas()

        # The RC check's reverse complements go through the cache too, so an unchanged rerun embeds nothing.
        rc_sample = _rc_check_sample(regions)
        wanted = pd.concat([
            sequences[["sequence_id", "sequence"]],
            pd.DataFrame({"sequence": [reverse_complement(s) for s in rc_sample]}).assign(
                sequence_id=lambda f: f["sequence"].map(text_sha256)),
        ]).drop_duplicates("sequence_id", ignore_index=True)
        cache = EmbeddingCache(store, embedding_key(identity, options))
        cached_ids, cached_vectors = cache.lookup(wanted["sequence_id"].tolist())
        to_embed = wanted[~wanted["sequence_id"].isin(cached_ids)]
        stats = None
        if len(to_embed):
            model = encoder.encoder(identity.model_sha256)
            windows = model.embed_windows(to_embed["sequence"].tolist(), pooling=options.pooling, rc=options.rc,
                                          window_tokens=options.window_tokens, window_overlap=options.window_overlap,
                                          batch_tokens=options.batch_tokens)
            stats = model.last_stats
            new_vectors = windows.sequence_vectors(len(to_embed))
            cache.store(chrom, to_embed["sequence_id"].tolist(), new_vectors, windows.strand_cosines(len(to_embed)))
        parts = [v for v in (cached_vectors, new_vectors if stats else None) if v is not None]
        vectors = np.concatenate(parts) if parts else np.zeros((0, identity.hidden_size), np.float32)
        vector_index = pd.Index(list(cached_ids) + to_embed["sequence_id"].tolist())

        keys, gene_vectors = pool_genes(assignments, regions, vector_index, vectors,
                                        settings.aggregation.region_to_gene)
        table = pa.table({
            "subject_id": pa.array(keys["subject_id"], pa.string()),
            "gene_id": pa.array(keys["gene_id"], pa.string()),
            "gene_name": pa.array(keys["gene_name"], pa.string()),
            "gene_order": pa.array(keys["gene_order"], pa.int32()),
            "vector": vector_column(gene_vectors.reshape(-1, identity.hidden_size)),
        })
        strand_cosines = cache.strand_cosines(sequences["sequence_id"].tolist())
        checks = [
            _completeness_check(gene_vectors, assignments, regions, identity.hidden_size),
            _rc_check(rc_sample, vector_index, vectors, options.rc),
        ]
        n_subjects = assignments["subject_id"].nunique()
        return publish(
            context, store, settings, {"gene_embeddings": table},
            facts={
                "model_id": identity.model_id,
                "model_sha256": identity.model_sha256,
                "tokenizer_version": identity.tokenizer_version,
                "rc_mode": options.rc,
                "rc_averaged": options.rc == "average",
                "pooling_strategy": options.pooling,
                "region_to_gene": settings.aggregation.region_to_gene,
                "window_tokens": options.window_tokens,
                "window_stride": options.window_tokens - 2 - options.window_overlap,
                "dtype": identity.dtype,
                "device": identity.device,
                **upstream_facts(store, "tokenized_genes", LINEAGE_FACTS, chrom),
            },
            metadata={
                "tokens_per_second": round(stats.tokens_per_second, 1) if stats else 0.0,
                "padding_fraction": round(stats.padding_fraction, 4) if stats else 0.0,
                "cache_hits": len(cached_ids),
                "embedded_sequences": len(to_embed),
                "n_subjects": int(n_subjects),
                "n_genes": int(regions["gene_id"].nunique()),
                "unique_sequences": len(sequences),
                "strand_cosine_median": float(np.nanmedian(strand_cosines)) if np.isfinite(strand_cosines).any()
                else float("nan"),
                "forward_vs_rc_cosine": png_markdown(
                    cosine_histogram_png({chrom: strand_cosines}, "forward vs reverse complement, before averaging",
                                         unit="sequences"),
                    f"cosine of each distinct sequence's forward and reverse-complement vectors ({chrom})",
                ) if np.isfinite(strand_cosines).any() else "no reverse complements (rc_mode none)",
            },
            inputs={"checkpoint": {"path": str(identity.weights), "sha256": identity.model_sha256}},
            upstream=[("tokenized_genes", chrom), ("subject_haplotypes", chrom), ("reference_sequences", chrom)],
            check_results=checks,
        )

    return [tokenized_genes, gene_embeddings]


def _completeness_check(gene_vectors: np.ndarray, assignments: pd.DataFrame, regions: pd.DataFrame,
                        hidden_size: int) -> dg.AssetCheckResult:
    expected_rows = assignments["subject_id"].nunique() * regions["gene_id"].nunique()
    non_finite = int((~np.isfinite(gene_vectors)).any(axis=1).sum()) if gene_vectors.size else 0
    width = gene_vectors.shape[1] if gene_vectors.ndim == 2 else 0
    return dg.AssetCheckResult(
        check_name="vectors_finite_and_complete",
        passed=non_finite == 0 and len(gene_vectors) == expected_rows and (width == hidden_size or not expected_rows),
        metadata={"rows": len(gene_vectors), "expected_rows": int(expected_rows), "non_finite_rows": non_finite,
                  "width": int(width), "hidden_size": hidden_size},
    )


def _rc_check(sample: list[str], vector_index: pd.Index, vectors: np.ndarray, rc_mode: str) -> dg.AssetCheckResult:
    tolerance = RC_CHECK_TOLERANCE
    forward = vectors[vector_index.get_indexer([text_sha256(s) for s in sample])]
    backward = vectors[vector_index.get_indexer([text_sha256(reverse_complement(s)) for s in sample])]
    scale = np.maximum(np.abs(forward).max(axis=1, initial=0.0), 1e-12)
    worst = float((np.abs(forward - backward).max(axis=1, initial=0.0) / scale).max(initial=0.0))
    return dg.AssetCheckResult(
        check_name="rc_invariance",
        passed=worst <= tolerance,
        # With rc none the vectors are expected to depend on the strand: a warning, not an error.
        severity=dg.AssetCheckSeverity.ERROR if rc_mode == "average" else dg.AssetCheckSeverity.WARN,
        metadata={"sampled_regions": len(sample), "max_relative_difference": worst, "tolerance": tolerance,
                  "rc_mode": rc_mode},
    )
