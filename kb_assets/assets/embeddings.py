"""tokenized_genes and gene_embeddings: per chromosome, every distinct tile of every region allele tokenized and
embedded once (cached by window content), pooled into region alleles, then into the distinct gene vectors that
subjects carry."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
from collections import Counter
from contextlib import ExitStack

import dagster as dg
import numpy as np
import pyarrow as pa

from kb_assets.assets.encoders import EncoderAssets
from kb_assets.assets.inputs import input_key
from kb_assets.assets.publishing import ANNOTATION_FACTS, REFERENCE_FACTS, png_markdown, publish, upstream_facts
from kb_assets.cluster.gpu_slots import GpuSlots
from kb_assets.cluster.k8s import gpu_k8s_tags
from kb_assets.cluster.slurm_pipes import job_entry_command
from kb_assets.diagnostics.plots import cosine_histogram_png, token_length_png
from kb_assets.diagnostics.tokens import token_length_shares
from kb_assets.encoders.chromosome import DATASETS, LazyEmbedder, embed_chromosome, embedding_facts, embedding_key
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.encoders.tokenized import counted_token_counts, tokenize_tiles
from kb_assets.errors import InputError
from kb_assets.genome.tiles import tile_alleles
from kb_assets.resources import EncoderResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import EncoderSettings, Recipe
from kb_assets.storage import EmbeddingCache, Warehouse

CODE_VERSION = "2"
GROUP = "embeddings"
TOP_TOKENS = 15
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


def window_embedder(encoder: EncoderResource, identity: CheckpointIdentity, options: EncoderSettings,
                    leases: ExitStack | None = None, log=None) -> LazyEmbedder:
    """Forward passes for the windows the cache lacks; the model loads on the first call only, on a device leased
    from the deployment's GPU list when it names several (the lease lasts as long as `leases`)."""
    lease = None
    if encoder.devices and leases is not None:
        def lease() -> str:
            return leases.enter_context(GpuSlots(encoder.devices, on_wait=log.info if log else None))

    return LazyEmbedder(lambda device: encoder.encoder(identity.model_sha256, device), options.batch_tokens, lease)


def _previous_tokenization(store: Warehouse, dataset: str, chrom: str, facts: dict) -> pa.Table | None:
    """The partition's earlier windows, if they were cut with the same tokenizer and window settings."""
    if not store.has_partition(dataset, chrom):
        return None
    earlier = upstream_facts(store, dataset, TOKENIZATION_FACTS, chrom)
    if any(earlier.get(key) != facts[key] for key in TOKENIZATION_FACTS):
        return None
    return store.read_partition(dataset, chrom)


def check_encoder_options(identity: CheckpointIdentity, options: EncoderSettings, source) -> None:
    """What the recipe asks must be possible with this model: windows within its context, a [CLS] for cls
    pooling."""
    specials = len(identity.tokenizer.prefix_ids) + len(identity.tokenizer.suffix_ids)
    if options.window_tokens > identity.max_tokens:
        raise InputError(source, "encoder.window_tokens", f"{options.window_tokens} tokens exceed the context of "
                         f"{identity.model_id} ({identity.max_tokens} tokens)",
                         f"set encoder.window_tokens to at most {identity.max_tokens}")
    if options.window_overlap >= options.window_tokens - specials:
        raise InputError(source, "encoder.window_overlap", f"{options.window_overlap} leaves no new token in a "
                         f"window of {options.window_tokens} with {specials} special tokens",
                         "lower encoder.window_overlap")
    if options.pooling == "cls" and not identity.tokenizer.prefix_ids:
        raise InputError(source, "encoder.pooling", f"cls pooling needs a [CLS] token; {identity.model_id} "
                         f"({identity.family}) puts none before its windows", "use mean or max pooling")


def build_embedding_assets(recipe: Recipe, chromosomes: dg.PartitionsDefinition, encoder: EncoderAssets,
                           slurm: bool = False) -> list:
    """tokenized_genes and gene_embeddings of one encoder; with `slurm`, gene_embeddings' forward passes run as
    SLURM jobs through the `slurm` resource (kb_assets.cluster.slurm_pipes)."""
    encoder_fingerprint = recipe.fingerprint("reference", "regions", "haplotypes", "encoder")
    pinned_tokenizer = recipe.encoder.tokenizer_sha256 if not encoder.name else None
    tokenized_dataset, datasets = encoder.dataset("tokenized_genes"), [encoder.dataset(d) for d in DATASETS]

    @dg.asset(
        key=encoder.key("tokenized_genes"), automation_condition=after_upstream_data_changes(),
        group_name=encoder.group(GROUP), code_version=f"{CODE_VERSION}-{encoder_fingerprint}",
        deps=["subject_haplotypes", input_key(encoder.input("tokenizer"))],
        partitions_def=chromosomes, kinds={"parquet"}, required_resource_keys={encoder.resource_key, "warehouse"},
        check_specs=[dg.AssetCheckSpec(
            "tokenizer_unchanged", asset=encoder.key("tokenized_genes"), blocking=pinned_tokenizer is not None,
            description="the tokenizer's hash equals the recipe's encoder.tokenizer_sha256 when pinned, else the "
                        "hash this partition was last tokenized with",
        )],
    )
    def tokenized_genes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Every region allele cut into tiles anchored to reference coordinates (each distinct tile once), and the
        model windows of every tile (both strands when RC averaging is on): ≤ window_tokens ids with the model's
        specials, the counted tokens marked so that each token of a region counts once."""
        settings = recipe.checked()
        options = settings.encoder
        store = context.resources.warehouse.get()
        chrom = context.partition_key
        previous_version = (store.read_facts(tokenized_dataset, chrom).get("tokenizer_version")
                            if store.has_partition(tokenized_dataset, chrom) else None)
        identity = getattr(context.resources, encoder.resource_key).identity()
        check_encoder_options(identity, options, settings.source)
        tokenizer = identity.tokenizer
        rc_mode = identity.rc_mode(options.rc)
        facts = {"tokenizer_version": tokenizer.version, "window_tokens": options.window_tokens,
                 "window_overlap": options.window_overlap, "rc_mode": rc_mode}
        regions = store.read_partition("reference_sequences", chrom).to_pandas()
        alleles = store.read_partition("subject_haplotypes/alleles", chrom).to_pandas()
        tiles, allele_tiles = tile_alleles(regions, alleles, options.tile_bp, options.tile_context_bp)
        windows, tokenized_now = tokenize_tiles(tokenizer, tiles, rc_mode == "average", options.window_tokens,
                                                options.window_overlap,
                                                _previous_tokenization(store, tokenized_dataset, chrom, facts))
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
                tokenized_dataset: windows,
                encoder.dataset("tokenized_genes/tiles"): pa.Table.from_pandas(tiles, preserve_index=False),
                encoder.dataset("tokenized_genes/allele_tiles"): pa.Table.from_pandas(allele_tiles,
                                                                                      preserve_index=False),
            },
            facts={
                **facts,
                "encoder": encoder.label,
                "model_family": identity.family,
                "bpe_vocab_size": tokenizer.vocab_size,
                "bp_per_token": round(counted_bases / counted_tokens, 4) if counted_tokens else 0.0,
                "n_windows": windows.num_rows,
                "max_tokens": max((len(ids) for ids in windows.column("input_ids").to_pylist()), default=0),
                "tile_bp": options.tile_bp,
                "tile_context_bp": options.tile_context_bp,
                **upstream_facts(store, "subject_haplotypes/assignments", LINEAGE_FACTS, chrom),
            },
            metadata={
                "n_alleles": len(alleles),
                "n_tiles": len(tiles),
                "tiles_tokenized_now": tokenized_now,
                "top_tokens": dg.MetadataValue.md(_top_tokens_markdown(token_counts, tokenizer)),
                "token_lengths": png_markdown(
                    token_length_png(token_length_shares(token_counts, tokenizer, f"{chrom} reference")),
                    f"token length distribution ({chrom}, reference sequences, forward strand)",
                ) if token_counts else "no tokens",
            },
            inputs={"tokenizer": {"path": str(tokenizer.path), "sha256": version}},
            check_results=[check],
        )

    @dg.asset(
        key=encoder.key("gene_embeddings"), automation_condition=after_upstream_data_changes(),
        group_name=encoder.group(GROUP),
        code_version=f"{CODE_VERSION}-{recipe.fingerprint('aggregation')}-{encoder_fingerprint}",
        deps=[tokenized_genes, "subject_haplotypes", "reference_sequences", input_key(encoder.input("checkpoint"))],
        partitions_def=chromosomes, pool="gpu", kinds={"pytorch", "parquet"},
        # On Kubernetes (k8s_job_executor) this step's pod asks for a GPU; elsewhere the tag is inert.
        op_tags=gpu_k8s_tags(gpus=1),
        required_resource_keys={encoder.resource_key, "warehouse", *(["slurm"] if slurm else [])},
        check_specs=[
            dg.AssetCheckSpec("vectors_finite_and_complete", asset=encoder.key("gene_embeddings"), blocking=True,
                              description="every gene vector finite and of width H, every gene with its reference "
                                          "vector (code 0), every subject code pointing at a vector"),
            dg.AssetCheckSpec("rc_invariance", asset=encoder.key("gene_embeddings"),
                              description="a sample of regions embeds like its reverse complement"),
        ],
    )
    def gene_embeddings(context: dg.AssetExecutionContext):
        """The distinct gene vectors of one chromosome and which subjects carry which (code 0, the reference's,
        for every subject not listed): each window embedded once (cached by content; forward and reverse
        complement), pooled into region alleles (every token counted once), regions into genes per haplotype,
        haplotypes averaged. The view `gene_embeddings` lists (subject_id, gene, vector) on demand."""
        settings = recipe.checked()
        options = settings.encoder
        store = context.resources.warehouse.get()
        chrom = context.partition_key
        if slurm:
            # The forward passes run as a SLURM job; its files are published here only when it succeeds.
            client = context.resources.slurm
            command = job_entry_command(client.settings, "kb_assets.encoders.chromosome:run_as_job",
                                        str(settings.source), chrom, encoder.name)
            results = list(client.run(context=context, command=command, publish_to=store.root).get_results())
            store.register_views(datasets)
            yield from results
            return
        resource = getattr(context.resources, encoder.resource_key)
        identity = resource.identity()
        with ExitStack() as leases:
            embed = window_embedder(resource, identity, options, leases, context.log)
            result = embed_chromosome(store, chrom, identity, options, settings.aggregation.region_to_gene,
                                      EmbeddingCache(store, embedding_key(identity, options)), embed, encoder.name)
        cosines = result.reference_strand_cosines()
        yield publish(
            context, store, settings, result.tables(),
            facts={**embedding_facts(store, chrom, identity, options, settings.aggregation.region_to_gene,
                                     encoder.name),
                   "encoder": encoder.label, "device": embed.device or identity.device},
            metadata={
                **result.metadata(),
                "forward_vs_rc_cosine": png_markdown(
                    cosine_histogram_png({chrom: cosines}, "forward vs reverse complement, before averaging",
                                         unit="regions"),
                    f"cosine of each reference region's forward and reverse-complement vectors ({chrom})",
                ) if np.isfinite(cosines).any() else f"no reverse complements (rc_mode {identity.rc_mode(options.rc)})",
            },
            inputs={encoder.input("checkpoint"): {"path": str(identity.weights), "sha256": identity.model_sha256}},
            check_results=[dg.AssetCheckResult(
                check_name=check.name, passed=check.passed, metadata=check.metadata,
                severity=dg.AssetCheckSeverity.ERROR if check.blocking_error else dg.AssetCheckSeverity.WARN)
                for check in result.checks],
        )

    return [tokenized_genes, gene_embeddings]
