"""tokenized_genes and gene_embeddings: per chromosome, every distinct tile of every region allele tokenized and
embedded once (cached by window content), pooled into region alleles, then into the distinct gene vectors that
subjects carry."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
from collections import Counter

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kb_assets.assets.inputs import input_key
from kb_assets.assets.publishing import ANNOTATION_FACTS, REFERENCE_FACTS, png_markdown, publish, upstream_facts
from kb_assets.diagnostics.plots import cosine_histogram_png, token_length_png
from kb_assets.encoders.alleles import allele_stats
from kb_assets.encoders.engine import cut_tile_windows, run_windows
from kb_assets.encoders.gene_pooling import pool_genes
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.encoders.pooling import cosine
from kb_assets.encoders.tokenized import model_windows, tokenize_tiles
from kb_assets.errors import InputError
from kb_assets.genome.tiles import Tile, tile_alleles
from kb_assets.resources import EncoderResource, WarehouseResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import EncoderSettings, Recipe
from kb_assets.storage import EmbeddingCache, EmbeddingKey, Warehouse, vector_column

CODE_VERSION = "2"
GROUP = "embeddings"
TOP_TOKENS = 15
RC_CHECK_SAMPLE = 4
RC_CHECK_TOLERANCE = 1e-4  # max |Δ| relative to the vector's largest |value|
LINEAGE_FACTS = REFERENCE_FACTS + ANNOTATION_FACTS + ("haplotype_mode",)
# What must match for an earlier tokenization of a tile to be reused.
TOKENIZATION_FACTS = ("tokenizer_version", "window_tokens", "window_overlap", "rc_mode")


def _top_tokens_markdown(counts: Counter, tokenizer) -> str:
    total = sum(counts.values()) or 1
    lines = ["| token | id | count | share |", "|---|---|---:|---:|"]
    lines += [
        f"| `{tokenizer.id_to_token(token_id)}` | {token_id} | {count:,} | {count / total:.2%} |"
        for token_id, count in counts.most_common(TOP_TOKENS)
    ]
    return "\n".join(lines)


def embedding_key(identity: CheckpointIdentity, options: EncoderSettings) -> EmbeddingKey:
    """The cache key of what this checkpoint computes on this kind of device with these settings."""
    return EmbeddingKey(identity.model_sha256, identity.dtype, identity.device.split(":")[0], options.compile)


def counted_token_counts(windows: pa.Table, tiles: list[int]) -> Counter:
    """Token ids counted in the forward-strand windows of the given tiles (each token of a region once)."""
    counts: Counter = Counter()
    forward = windows.filter(pc.and_(pc.invert(windows.column("reverse_complement")),
                                     pc.is_in(windows.column("tile"), value_set=pa.array(tiles, pa.int32()))))
    for ids, start, end in zip(forward.column("input_ids").to_pylist(), forward.column("count_start").to_pylist(),
                               forward.column("count_end").to_pylist()):
        counts.update(ids[start:end])
    return counts


def _token_length_table(counts: Counter, tokenizer, label: str) -> pd.DataFrame:
    """Share of tokens by their length in bases, for the token length plot."""
    lengths = Counter()
    for token_id, count in counts.items():
        lengths[len(tokenizer.id_to_token(token_id))] += count
    total = sum(lengths.values()) or 1
    return pd.DataFrame({"region_type": label, "length_bp": sorted(lengths),
                         "share": [lengths[n] / total for n in sorted(lengths)]})


def window_embedder(encoder: EncoderResource, identity: CheckpointIdentity, options: EncoderSettings):
    """Forward passes for the windows the cache lacks; the model is loaded on the first call only."""
    def embed(missing):
        model = encoder.encoder(identity.model_sha256)
        return run_windows(model.model, missing, unk_ids=model.tokenizer.unk_ids, pad_id=model.tokenizer.pad_id,
                           batch_tokens=options.batch_tokens, device=model.device)

    return embed


def _previous_tokenization(store: Warehouse, chrom: str, facts: dict) -> pa.Table | None:
    """The partition's earlier windows, if they were cut with the same tokenizer and window settings."""
    if not store.has_partition("tokenized_genes", chrom):
        return None
    earlier = upstream_facts(store, "tokenized_genes", TOKENIZATION_FACTS, chrom)
    if any(earlier.get(key) != facts[key] for key in TOKENIZATION_FACTS):
        return None
    return store.read_partition("tokenized_genes", chrom)


def build_embedding_assets(recipe: Recipe, chromosomes: dg.PartitionsDefinition) -> list:
    encoder_fingerprint = recipe.fingerprint("reference", "regions", "haplotypes", "encoder")
    pinned_tokenizer = recipe.encoder.tokenizer_sha256

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=f"{CODE_VERSION}-{encoder_fingerprint}",
        deps=["subject_haplotypes", input_key("tokenizer")],
        partitions_def=chromosomes, kinds={"parquet"},
        check_specs=[dg.AssetCheckSpec(
            "tokenizer_unchanged", asset="tokenized_genes", blocking=pinned_tokenizer is not None,
            description="tokenizer.json hash equals the recipe's encoder.tokenizer_sha256 when pinned, else the "
                        "hash this partition was last tokenized with",
        )],
    )
    def tokenized_genes(
        context: dg.AssetExecutionContext, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Every region allele cut into tiles anchored to reference coordinates (each distinct tile once), and the
        model windows of every tile (both strands when RC averaging is on): ≤ window_tokens ids with the model's
        specials, the counted tokens marked so that each token of a region counts once."""
        settings = recipe.checked()
        options = settings.encoder
        store = warehouse.get()
        chrom = context.partition_key
        previous_version = upstream_facts(store, "tokenized_genes", ("tokenizer_version",), chrom).get(
            "tokenizer_version")
        tokenizer = encoder.identity().tokenizer
        facts = {"tokenizer_version": tokenizer.version, "window_tokens": options.window_tokens,
                 "window_overlap": options.window_overlap, "rc_mode": options.rc}
        regions = store.read_partition("reference_sequences", chrom).to_pandas()
        alleles = store.read_partition("subject_haplotypes/alleles", chrom).to_pandas()
        tiles, allele_tiles = tile_alleles(regions, alleles, options.tile_bp, options.tile_context_bp)
        windows, tokenized_now = tokenize_tiles(tokenizer, tiles, options.rc == "average", options.window_tokens,
                                                options.window_overlap, _previous_tokenization(store, chrom, facts))
        # Token statistics describe the reference sequences: each tile of a region's allele 0 once.
        reference_tiles = sorted({int(t) for tiles_of in allele_tiles.loc[allele_tiles["allele"] == 0, "tiles"]
                                  for t in tiles_of})
        token_counts = counted_token_counts(windows, reference_tiles)
        counted_tokens = sum(token_counts.values())
        counted_bases = int(regions["length"].sum())
        version = tokenizer.version
        expected = pinned_tokenizer or previous_version or version
        check = dg.AssetCheckResult(
            check_name="tokenizer_unchanged", passed=version == expected,
            severity=dg.AssetCheckSeverity.ERROR if pinned_tokenizer else dg.AssetCheckSeverity.WARN,
            metadata={"tokenizer_version": version, "expected": expected,
                      "compared_with": "recipe pin" if pinned_tokenizer else "previous materialization"},
        )
        return publish(
            context, store, settings,
            {
                "tokenized_genes": windows,
                "tokenized_genes/tiles": pa.Table.from_pandas(tiles, preserve_index=False),
                "tokenized_genes/allele_tiles": pa.Table.from_pandas(allele_tiles, preserve_index=False),
            },
            facts={
                **facts,
                "bpe_vocab_size": tokenizer.vocab_size,
                "bp_per_token": round(counted_bases / counted_tokens, 4) if counted_tokens else 0.0,
                "n_windows": windows.num_rows,
                "max_tokens": max((len(ids) for ids in windows.column("input_ids").to_pylist()), default=0),
                "tile_bp": options.tile_bp,
                "tile_context_bp": options.tile_context_bp,
                **upstream_facts(store, "subject_haplotypes", LINEAGE_FACTS, chrom),
            },
            metadata={
                "n_alleles": len(alleles),
                "n_tiles": len(tiles),
                "tiles_tokenized_now": tokenized_now,
                "top_tokens": dg.MetadataValue.md(_top_tokens_markdown(token_counts, tokenizer)),
                "token_lengths": png_markdown(
                    token_length_png(_token_length_table(token_counts, tokenizer, f"{chrom} reference")),
                    f"token length distribution ({chrom}, reference sequences, forward strand)",
                ) if token_counts else "no tokens",
            },
            inputs={"tokenizer": {"path": str(tokenizer.path), "sha256": version}},
            check_results=[check],
        )

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=f"{CODE_VERSION}-{recipe.fingerprint('aggregation')}-{encoder_fingerprint}",
        deps=[tokenized_genes, "subject_haplotypes", "reference_sequences", input_key("checkpoint")],
        partitions_def=chromosomes, pool="gpu",
        kinds={"pytorch", "parquet"},
        check_specs=[
            dg.AssetCheckSpec("vectors_finite_and_complete", asset="gene_embeddings", blocking=True,
                              description="every gene vector finite and of width H, every gene with its reference "
                                          "vector (code 0), every subject code pointing at a vector"),
            dg.AssetCheckSpec("rc_invariance", asset="gene_embeddings",
                              description="a sample of regions embeds like its reverse complement"),
        ],
    )
    def gene_embeddings(
        context: dg.AssetExecutionContext, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """The distinct gene vectors of one chromosome and which subjects carry which (code 0, the reference's,
        for every subject not listed): each window embedded once (cached by content; forward and reverse
        complement), pooled into region alleles (every token counted once), regions into genes per haplotype,
        haplotypes averaged. The view `gene_embeddings` lists (subject_id, gene, vector) on demand."""
        settings = recipe.checked()
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
        windows = store.read_partition("tokenized_genes", chrom)
        allele_tiles = store.read_partition("tokenized_genes/allele_tiles", chrom).to_pandas()
        tiles = store.read_partition("tokenized_genes/tiles", chrom, columns=["tile", "sequence", "core_start",
                                                                              "core_end"]).to_pandas()
        assignments = store.read_partition("subject_haplotypes/assignments", chrom).to_pandas()
        subjects = store.read_partition("subject_haplotypes/subjects", chrom).to_pandas()
        ploidy = upstream_facts(store, "subject_haplotypes", ("ploidy",), chrom).get("ploidy", 1)
        regions = store.read_partition(
            "reference_sequences", chrom, columns=["region_id", "gene_id", "gene_name", "gene_order", "length"]
        ).to_pandas()

        cache = EmbeddingCache(store, embedding_key(identity, options))

        window_stats, use = cache.fill(model_windows(windows), identity.hidden_size,
                                       window_embedder(encoder, identity, options))
        both_strands = options.rc == "average"
        stats = allele_stats(windows.select(["tile", "reverse_complement"]).to_pandas(), window_stats,
                             allele_tiles["tiles"], len(tiles), both_strands)
        allele_vectors = stats.vectors(options.pooling)
        kept = subjects.loc[~subjects["excluded"], "subject_index"].to_numpy(np.int64)
        empty_alleles = stats.forward.counts == 0
        genes = pool_genes(regions, allele_tiles[["region_id", "allele"]], allele_vectors, empty_alleles, assignments,
                           kept, ploidy, settings.aggregation.region_to_gene)
        strand_cosines = stats.strand_cosines(options.pooling)

        vectors = genes.vectors.astype({"gene_order": np.int32, "code": np.int32, "n_subjects": np.int64})
        tables = {
            "gene_embeddings/vectors": pa.Table.from_pandas(vectors, preserve_index=False).append_column(
                "vector", vector_column(genes.matrix)),
            "gene_embeddings/assignments": pa.Table.from_pandas(genes.assignments, preserve_index=False),
            "gene_embeddings/subjects": pa.Table.from_pandas(
                subjects.loc[~subjects["excluded"], ["subject_index", "subject_id"]], preserve_index=False),
            "gene_embeddings/alleles": pa.table({
                "region_id": pa.array(allele_tiles["region_id"].astype(str)),
                "allele": pa.array(allele_tiles["allele"].to_numpy(np.int32)),
                "empty": pa.array(empty_alleles),
                "strand_cosine": pa.array(strand_cosines, pa.float32(), from_pandas=True),
                "vector": vector_column(np.nan_to_num(allele_vectors)),
            }),
        }
        checks = [
            _completeness_check(genes, regions, identity.hidden_size),
            _rc_check(options, identity, tiles, allele_tiles, allele_vectors, encoder, cache),
        ]
        reference = allele_tiles["allele"].to_numpy() == 0
        return publish(
            context, store, settings, tables,
            facts={
                "model_id": identity.model_id,
                "model_sha256": identity.model_sha256,
                "tokenizer_version": identity.tokenizer_version,
                "rc_mode": options.rc,
                "rc_averaged": both_strands,
                "pooling_strategy": options.pooling,
                "region_to_gene": settings.aggregation.region_to_gene,
                "tile_bp": options.tile_bp,
                "tile_context_bp": options.tile_context_bp,
                "window_tokens": options.window_tokens,
                "window_stride": options.window_tokens - 2 - options.window_overlap,
                "dtype": identity.dtype,
                "device": identity.device,
                "device_kind": identity.device.split(":")[0],
                **upstream_facts(store, "tokenized_genes", LINEAGE_FACTS, chrom),
            },
            metadata={
                **({"tokens_per_second": round(use.tokens_per_second, 1),
                    "padding_fraction": round(use.padding_fraction, 4)} if use.embedded else
                   {"throughput": "nothing embedded: every window came from the cache"}),
                "embedded_windows": use.embedded,
                "embedded_tokens": use.embedded_tokens,
                "cache_hits": use.hits,
                "n_subjects": len(kept),
                "n_genes": int(regions["gene_id"].nunique()),
                "distinct_gene_vectors": len(vectors),
                "non_reference_subject_genes": len(genes.assignments),
                "empty_region_haplotypes": genes.empty_region_haplotypes,
                "empty_alleles": int(empty_alleles.sum()),
                "genes_with_every_region_deleted": int(vectors["all_regions_deleted"].sum()),
                "strand_cosine_median": float(np.nanmedian(strand_cosines))
                if np.isfinite(strand_cosines).any() else float("nan"),
                "forward_vs_rc_cosine": png_markdown(
                    cosine_histogram_png({chrom: strand_cosines[reference]},
                                         "forward vs reverse complement, before averaging", unit="regions"),
                    f"cosine of each reference region's forward and reverse-complement vectors ({chrom})",
                ) if np.isfinite(strand_cosines[reference]).any() else "no reverse complements (rc_mode none)",
            },
            inputs={"checkpoint": {"path": str(identity.weights), "sha256": identity.model_sha256}},
            check_results=checks,
        )

    return [tokenized_genes, gene_embeddings]


def _completeness_check(genes, regions: pd.DataFrame, hidden_size: int) -> dg.AssetCheckResult:
    matrix = genes.matrix
    non_finite = int((~np.isfinite(matrix)).any(axis=1).sum()) if matrix.size else 0
    width = matrix.shape[1] if matrix.ndim == 2 else 0
    with_reference = set(genes.vectors.loc[genes.vectors["code"] == 0, "gene_order"])
    without_reference = sorted(set(regions["gene_order"]) - with_reference)
    codes = genes.vectors.groupby("gene_order")["code"].max()
    dangling = int((genes.assignments["code"].to_numpy() > codes.reindex(
        genes.assignments["gene_order"]).fillna(-1).to_numpy()).sum())
    return dg.AssetCheckResult(
        check_name="vectors_finite_and_complete",
        passed=(non_finite == 0 and not without_reference and dangling == 0
                and (width == hidden_size or not len(matrix))),
        metadata={"vectors": len(matrix), "non_finite_vectors": non_finite, "genes_without_reference_vector":
                  len(without_reference), "codes_without_vector": dangling, "width": int(width),
                  "hidden_size": hidden_size},
    )


def _rc_check(options: EncoderSettings, identity: CheckpointIdentity, tiles: pd.DataFrame, allele_tiles: pd.DataFrame,
              allele_vectors: np.ndarray, encoder: EncoderResource, cache: EmbeddingCache) -> dg.AssetCheckResult:
    """A few reference regions, read as their reverse complement (tiles mirrored, tokenized afresh), must give the
    vector the region has. The windows are those of the other strand, so they come from the cache: checking costs no
    forward pass on a rerun."""
    if options.rc != "average":
        return dg.AssetCheckResult(check_name="rc_invariance", passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"rc_mode": options.rc, "skipped": "rc_mode none embeds one strand: "
                                             "vectors depend on the strand by design"})
    reference = allele_tiles[(allele_tiles["allele"] == 0) & (allele_tiles["tiles"].map(len) > 0)]
    sample = reference.sort_values("region_id").head(RC_CHECK_SAMPLE)
    by_number = tiles.set_index("tile")
    mirrored = [[Tile(by_number.at[t, "sequence"], int(by_number.at[t, "core_start"]),
                      int(by_number.at[t, "core_end"])).reverse_complement() for t in reversed(list(numbers))]
                for numbers in sample["tiles"]]
    flat = [tile for region in mirrored for tile in region]
    owner = np.repeat(np.arange(len(mirrored)), [len(region) for region in mirrored])
    cut = cut_tile_windows(identity.tokenizer, flat, True, options.window_tokens, options.window_overlap)

    window_stats, _ = cache.fill(cut.windows, identity.hidden_size, window_embedder(encoder, identity, options))
    windows = pd.DataFrame({"tile": cut.tile, "reverse_complement": cut.reverse_complement})
    per_region = pd.Series([[int(i) for i in np.flatnonzero(owner == r)] for r in range(len(mirrored))])
    backward = allele_stats(windows, window_stats, per_region, len(flat), True).vectors(options.pooling)
    forward = allele_vectors[sample.index.to_numpy()]
    scale = np.maximum(np.nanmax(np.abs(forward), axis=1, initial=0.0), 1e-12)
    worst = float(np.nanmax(np.abs(forward - backward).max(axis=1, initial=0.0) / scale, initial=0.0))
    return dg.AssetCheckResult(
        check_name="rc_invariance", passed=worst <= RC_CHECK_TOLERANCE, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"sampled_regions": len(sample), "max_relative_difference": worst, "tolerance": RC_CHECK_TOLERANCE,
                  "rc_mode": options.rc, "min_cosine": float(np.nanmin(cosine(forward, backward), initial=1.0))},
    )
