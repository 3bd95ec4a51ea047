"""Recipe diagnostics, materialized on demand in their own group: RC-averaging stability, the pooling comparison
and the BPE token report. Each reads the warehouse, calls kb_assets.diagnostics and publishes a table in DuckDB,
extra tables and plots, with the tokenizer and model that made it, so a diagnostic is never read against another
model. Forward passes go through the embedding cache: an unchanged rerun runs none. Each encoder of the recipe has
its own three (kb_assets.assets.encoders); with two or more, `encoder_comparison` sets them side by side."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import dagster as dg
import numpy as np
import pandas as pd

from kb_assets import diagnostics
from kb_assets.assets.cohort import read_factored_subject_matrix
from kb_assets.assets.embeddings import embedding_key, window_embedder
from kb_assets.assets.encoders import EncoderAssets
from kb_assets.assets.inputs import input_key
from kb_assets.assets.publishing import (
    ANNOTATION_FACTS,
    REFERENCE_FACTS,
    arrow_table,
    gene_chromosomes,
    png_markdown,
    publish,
    upstream_facts,
)
from kb_assets.assets.reference import read_annotation
from kb_assets.diagnostics import plots
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.encoders.pooling import POOLINGS
from kb_assets.genome import ReferenceGenome
from kb_assets.resources import EncoderResource
from kb_assets.settings import Recipe
from kb_assets.storage import EmbeddingCache, Warehouse

CODE_VERSION = "1"
GROUP = "diagnostics"
COMPARISON_GROUP = "comparison"
# pooling_comparison's cohort part uses the first this many subjects by id: 500 subjects give 124,750 pairs, enough
# for a stable rank correlation, while a 20,000-subject cohort would give 2·10^8 and a forward pass per variant.
MAX_COHORT_SUBJECTS = 500
Q_THRESHOLD = 0.05
SHOWN_ROWS = 15


def _markdown(frame: pd.DataFrame) -> str:
    """A small table as markdown, floats to 4 significant digits."""
    return frame.to_markdown(index=False, floatfmt=".4g")


def _reference_stats(store: Warehouse, chrom: str, settings: Recipe, identity: CheckpointIdentity,
                     resource: EncoderResource, encoder: EncoderAssets) -> tuple[diagnostics.ReferenceStats, int]:
    """Both strands of the chromosome's reference regions, from the windows gene_embeddings cached."""
    options = settings.encoder
    return diagnostics.reference_stats(
        store.read_partition("reference_sequences", chrom).to_pandas(),
        store.read_partition(encoder.dataset("tokenized_genes/tiles"), chrom).to_pandas(),
        store.read_partition(encoder.dataset("tokenized_genes/allele_tiles"), chrom).to_pandas(),
        identity.tokenizer, EmbeddingCache(store, embedding_key(identity, options)),
        window_embedder(resource, identity, options), identity.hidden_size, options.window_tokens,
        options.window_overlap)


def _model_facts(identity: CheckpointIdentity, settings: Recipe, encoder: EncoderAssets) -> dict:
    options = settings.encoder
    return {
        "encoder": encoder.label,
        "model_family": identity.family,
        "model_id": identity.model_id,
        "model_sha256": identity.model_sha256,
        "tokenizer_version": identity.tokenizer_version,
        "window_tokens": options.window_tokens,
        "window_overlap": options.window_overlap,
        "dtype": identity.dtype,
        "device": identity.device,
        "region_to_gene": settings.aggregation.region_to_gene,
    }


def build_diagnostic_assets(recipe: Recipe, encoders: list[EncoderAssets],
                            max_subjects: int = MAX_COHORT_SUBJECTS) -> list:
    """Each encoder's diagnostics, and the comparison of the encoders when there are several."""
    assets = [asset for encoder in encoders for asset in _encoder_diagnostics(recipe, encoder, max_subjects)]
    if len(encoders) > 1:
        assets.append(_encoder_comparison(recipe, encoders, max_subjects))
    return assets


def _encoder_diagnostics(recipe: Recipe, encoder: EncoderAssets, max_subjects: int) -> list:
    embedding_code = (f"{CODE_VERSION}-"
                      f"{recipe.fingerprint('reference', 'regions', 'haplotypes', 'encoder', 'aggregation')}")
    kinds = {"pytorch", "parquet"}
    tokenized, embedded_key = encoder.key("tokenized_genes"), encoder.key("gene_embeddings")
    resources = {encoder.resource_key, "warehouse"}

    @dg.asset(key=encoder.key("rc_stability"), group_name=encoder.group(GROUP), code_version=embedding_code,
              deps=["reference_sequences", tokenized, embedded_key, input_key(encoder.input("checkpoint"))],
              pool="gpu", kinds=kinds, required_resource_keys=resources)
    def rc_stability(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """How much RC averaging changes the reference vectors, and where: per gene (and region) the cosine between
        embed(forward) and embed(reverse complement), each embedded alone, and between embed(forward) and their
        average (the recipe's vector); summaries by chromosome and gene length; the genes that move most."""
        settings = recipe.checked()
        store = context.resources.warehouse.get()
        resource = getattr(context.resources, encoder.resource_key)
        identity = resource.identity()
        chromosomes = gene_chromosomes(store, settings, ("reference_sequences",
                                                         encoder.dataset("tokenized_genes/tiles")))
        pooling = settings.encoder.pooling
        frames, forward, reverse, embedded = [], [], [], 0
        for chrom in chromosomes:
            reference, embedded_now = _reference_stats(store, chrom, settings, identity, resource, encoder)
            strands = reference.strand_vectors(pooling)
            frames.append(reference.regions)
            forward.append(strands[0])
            reverse.append(strands[1])
            embedded += embedded_now
        regions = pd.concat(frames, ignore_index=True)
        result = diagnostics.rc_stability(regions, np.concatenate(forward), np.concatenate(reverse),
                                          settings.aggregation.region_to_gene)
        genes = result.genes
        moved = diagnostics.most_moved(genes)[["moved_rank", "gene_name", "chrom", "length_bp",
                                               "cosine_forward_rc", "cosine_forward_average", "relative_change"]]
        histogram = plots.cosine_histogram_png(
            {"forward vs reverse complement": genes["cosine_forward_rc"].to_numpy(),
             "forward vs RC average": genes["cosine_forward_average"].to_numpy()},
            "per-gene cosine, reference sequences")
        return publish(
            context, store, settings,
            {encoder.dataset("rc_stability"): arrow_table(genes),
             encoder.dataset("rc_stability/regions"): arrow_table(result.regions),
             encoder.dataset("rc_stability/summary"): arrow_table(result.summary)},
            facts={**_model_facts(identity, settings, encoder), "pooling_strategy": settings.encoder.pooling,
                   "rc_mode": identity.rc_mode(settings.encoder.rc),
                   "compared": "each strand embedded alone vs their average",
                   **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS)},
            metadata={
                "n_genes": len(genes),
                "mean_cosine_forward_rc": round(float(genes["cosine_forward_rc"].mean()), 6),
                "min_cosine_forward_rc": round(float(genes["cosine_forward_rc"].min()), 6),
                "mean_cosine_forward_average": round(float(genes["cosine_forward_average"].mean()), 6),
                "mean_relative_change": round(float(genes["relative_change"].mean()), 6),
                "most_moved_genes": dg.MetadataValue.md(_markdown(moved)),
                "summary": dg.MetadataValue.md(_markdown(result.summary)),
                "cosine_histogram": png_markdown(histogram, "per-gene cosine: forward vs reverse complement, and "
                                                            "forward vs their average"),
                "embedded_windows": embedded,
            },
        )

    @dg.asset(key=encoder.key("pooling_comparison"), group_name=encoder.group(GROUP),
              code_version=f"{embedding_code}-s{max_subjects}",
              deps=["reference_sequences", "subject_haplotypes", tokenized, embedded_key,
                    input_key(encoder.input("checkpoint"))],
              pool="gpu", kinds=kinds, required_resource_keys=resources)
    def pooling_comparison(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Mean vs CLS vs max token pooling: per gene the cosine between the strategies' reference vectors; per gene
        and strategy the half-split window stability; per pair of strategies the Spearman correlation of
        subject-to-subject distances over the first `max_subjects` cohort subjects by id (see
        kb_assets.diagnostics.pooling for the exact definitions). A model without a [CLS] token (Caduceus) is
        compared on mean and max only."""
        settings = recipe.checked()
        options = settings.encoder
        region_to_gene = settings.aggregation.region_to_gene
        store = context.resources.warehouse.get()
        resource = getattr(context.resources, encoder.resource_key)
        identity = resource.identity()
        rc_mode = identity.rc_mode(options.rc)
        strategies = tuple(p for p in POOLINGS if p != "cls" or identity.tokenizer.prefix_ids)
        subjects_dataset = encoder.dataset("gene_embeddings/subjects")
        chromosomes = gene_chromosomes(store, settings, ("reference_sequences", encoder.dataset("tokenized_genes"),
                                                         subjects_dataset))
        subjects, n_eligible = diagnostics.cohort_subjects(
            [store.read_partition(subjects_dataset, c).to_pandas() for c in chromosomes], max_subjects)
        comparison = diagnostics.PoolingComparison(strategies, len(subjects), rc_mode, region_to_gene)
        embedded = 0
        for chrom in chromosomes:
            reference, embedded_now = _reference_stats(store, chrom, settings, identity, resource, encoder)
            embedded += embedded_now
            sample = diagnostics.sampled_alleles(
                store, chrom, subjects, encoder.dataset("tokenized_genes"), subjects_dataset,
                EmbeddingCache(store, embedding_key(identity, options)), window_embedder(resource, identity, options),
                identity.hidden_size, rc_mode == "average")
            comparison.add(reference, sample)
        result = comparison.result()
        half_split, agreement = result.half_split, result.agreement
        mean_cosines = result.pair_cosines.groupby(["strategy_a", "strategy_b"], sort=False)["cosine"].mean()
        mean_half_split = half_split.groupby("strategy", sort=False)["half_split_cosine"].mean()
        return publish(
            context, store, settings,
            {encoder.dataset("pooling_comparison"): arrow_table(result.pair_cosines),
             encoder.dataset("pooling_comparison/half_split"): arrow_table(half_split),
             encoder.dataset("pooling_comparison/distance_agreement"): arrow_table(agreement)},
            facts={**_model_facts(identity, settings, encoder), "rc_mode": rc_mode, "strategies": list(strategies),
                   "pooling_strategy": options.pooling, "max_subjects": max_subjects,
                   "subjects": f"the first {len(subjects)} of {n_eligible} cohort subjects by id",
                   **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS)},
            metadata={
                "n_genes": len(result.genes),
                "n_subjects_compared": len(subjects),
                "subjects_eligible": n_eligible,
                **{f"mean_cosine/{a}_vs_{b}": round(float(v), 6) for (a, b), v in mean_cosines.items()},
                **{f"mean_half_split_cosine/{s}": round(float(v), 6) for s, v in mean_half_split.items()},
                **{f"spearman_rho/{r.strategy_a}_vs_{r.strategy_b}": round(float(r.spearman_rho), 6)
                   for r in agreement.itertuples()},
                "genes_with_one_tile": int((half_split.loc[half_split["strategy"] == strategies[0], "n_tiles"]
                                            == 1).sum()),
                "distance_agreement": dg.MetadataValue.md(_markdown(agreement)),
                "cosine_plot": png_markdown(plots.pooling_png(result.pair_cosines, half_split),
                                            "per-gene cosine between strategies, and half-split stability"),
                "rank_agreement_plot": png_markdown(plots.rank_agreement_png(agreement, strategies),
                                                    "Spearman ρ of subject-to-subject distances "
                                                    f"({len(subjects)} subjects)"),
                "embedded_windows": embedded,
            },
        )

    @dg.asset(key=encoder.key("bpe_token_report"), group_name=encoder.group(GROUP),
              code_version=f"{CODE_VERSION}-{recipe.fingerprint('reference', 'regions')}",
              deps=["gene_annotations", "gene_set", input_key(encoder.input("tokenizer"))], kinds={"parquet"},
              required_resource_keys=resources)
    def bpe_token_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """How the checkpoint's BPE tokenizer cuts the gene set's exons, UTRs, CDS, introns and promoters: token
        lengths, bp per token, the most frequent tokens, their enrichment in exons vs introns/promoters (log odds,
        chi-square or Fisher p, BH q) and whether token boundaries in CDS fall between codons (see
        kb_assets.diagnostics.tokens)."""
        settings = recipe.checked()
        store = context.resources.warehouse.get()
        identity = getattr(context.resources, encoder.resource_key).identity()
        genes = store.read_table("gene_set").to_pandas()
        annotation = read_annotation(store, str(settings.inputs.gtf))
        reference = ReferenceGenome(settings.inputs.fasta)
        tally = diagnostics.TokenTally(identity.tokenizer)
        for chrom in [c for c in settings.reference.chromosomes if c in set(genes["chrom"])]:
            tally.add(diagnostics.region_type_sequences(reference, annotation, genes, chrom,
                                                        settings.regions.promoter_upstream))
        report = tally.report()
        tokens, codon = report.tokens, report.codon_frame.iloc[0]
        significant = tokens["q_value"] < Q_THRESHOLD
        top = tokens.head(SHOWN_ROWS)[["rank", "token", "length_bp", "count", "share", "log_odds_exon", "q_value"]]
        return publish(
            context, store, settings,
            {encoder.dataset("bpe_token_report"): arrow_table(tokens),
             encoder.dataset("bpe_token_report/region_types"): arrow_table(report.region_types),
             encoder.dataset("bpe_token_report/token_lengths"): arrow_table(report.token_lengths),
             encoder.dataset("bpe_token_report/codon_frame"): arrow_table(report.codon_frame)},
            facts={
                "encoder": encoder.label,
                "model_family": identity.family,
                "model_id": identity.model_id,
                "model_sha256": identity.model_sha256,
                "tokenizer_version": identity.tokenizer_version,
                "bpe_vocab_size": identity.tokenizer.vocab_size,
                "promoter_upstream": settings.regions.promoter_upstream,
                **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS),
            },
            metadata={
                "bp_per_token": dg.MetadataValue.json(
                    {r.region_type: round(r.bp_per_token, 4) for r in report.region_types.itertuples()}),
                "region_types": dg.MetadataValue.md(_markdown(report.region_types)),
                "distinct_tokens": len(tokens),
                "tokens_enriched_in_exons": int((significant & (tokens["log_odds_exon"] > 0)).sum()),
                "tokens_enriched_in_background": int((significant & (tokens["log_odds_exon"] < 0)).sum()),
                "q_threshold": Q_THRESHOLD,
                "top_tokens": dg.MetadataValue.md(_markdown(top)),
                "codon_boundary_share": round(float(codon["share_at_codon_boundary"]), 6),
                "codon_boundary_chance": round(float(codon["chance_share"]), 6),
                "codon_boundary_p_value": float(codon["binomial_p_value"]),
                "cds_token_boundaries": int(codon["n_boundaries"]),
                "token_length_plot": png_markdown(plots.token_length_png(report.token_lengths),
                                                  "token length distribution by region type"),
                "enrichment_plot": png_markdown(plots.enrichment_png(tokens, Q_THRESHOLD),
                                                f"token enrichment in exons vs introns/promoters (q < {Q_THRESHOLD} "
                                                "in red)"),
            },
        )

    return [rc_stability, pooling_comparison, bpe_token_report]


def _encoder_comparison(recipe: Recipe, encoders: list[EncoderAssets], max_subjects: int):
    names = [encoder.label for encoder in encoders]

    @dg.asset(group_name=COMPARISON_GROUP, code_version=f"{CODE_VERSION}-s{max_subjects}",
              deps=[encoder.key(name) for encoder in encoders
                    for name in ("rc_stability", "pooling_comparison", "subject_matrix")],
              kinds={"parquet"}, required_resource_keys={"warehouse"})
    def encoder_comparison(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """The recipe's encoders side by side on the same gene set and cohort: per gene and encoder, the cosine of
        the forward and reverse-complement vectors each embedded alone (before any averaging) and between pooling
        strategies; per gene and pair of encoders, the Spearman correlation of subject-to-subject distances over
        the first `max_subjects` subjects by id, and over the whole gene set."""
        settings = recipe.checked()
        store = context.resources.warehouse.get()
        outputs, facts = {}, {}
        for encoder in encoders:
            subjects, blocks = read_factored_subject_matrix(store, encoder.name)
            outputs[encoder.label] = diagnostics.EncoderOutputs(
                rc_stability=store.read_table(encoder.dataset("rc_stability")).to_pandas(),
                pooling=store.read_table(encoder.dataset("pooling_comparison")).to_pandas(),
                subjects=subjects, blocks=blocks, source=str(store.dataset_dir(encoder.dataset("subject_matrix"))))
            made_with = store.read_facts(encoder.dataset("subject_matrix"))
            facts[encoder.label] = {key: made_with[key] for key in ("model_sha256", "tokenizer_version", "rc_mode",
                                                                    "pooling_strategy") if key in made_with}
        result = diagnostics.compare_encoders(outputs, max_subjects)
        overall = result.agreement[result.agreement["gene_id"] == diagnostics.ALL_GENES]
        by_encoder = result.genes.groupby("encoder", sort=False)
        return publish(
            context, store, settings,
            {"encoder_comparison": arrow_table(result.genes),
             "encoder_comparison/distance_agreement": arrow_table(result.agreement)},
            facts={"encoders": names, "made_with": facts, "max_subjects": max_subjects,
                   "subjects": f"the first {len(result.subjects)} subjects by id of every encoder's subject matrix",
                   **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS)},
            metadata={
                "n_genes": int(result.genes["gene_id"].nunique()),
                "n_subjects_compared": len(result.subjects),
                **{f"mean_cosine_forward_rc/{name}": round(float(v), 6)
                   for name, v in by_encoder["cosine_forward_rc"].mean().items()},
                **{f"mean_cosine_mean_max/{name}": round(float(v), 6)
                   for name, v in by_encoder["cosine_mean_max"].mean().items()},
                **{f"spearman_rho_all_genes/{r.encoder_a}_vs_{r.encoder_b}": round(float(r.spearman_rho), 6)
                   for r in overall.itertuples()},
                "distance_agreement": dg.MetadataValue.md(_markdown(overall[["encoder_a", "encoder_b",
                                                                             "spearman_rho", "n_subjects"]])),
                "comparison_plot": png_markdown(plots.encoder_comparison_png(result.genes, result.agreement),
                                                "encoders side by side: RC movement, pooling movement, and agreement "
                                                "on which subjects are alike"),
            },
        )

    return encoder_comparison
