"""Recipe diagnostics, materialized on demand in their own group: RC-averaging stability, the pooling comparison
and the BPE token report. Each reads the warehouse, calls kb_assets.diagnostics and publishes a table in DuckDB,
extra tables and plots, with the tokenizer and model that made it, so a diagnostic is never read against another
model. Forward passes go through the embedding cache: an unchanged rerun runs none."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from kb_assets import diagnostics
from kb_assets.assets.embeddings import embedding_key, window_embedder
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
from kb_assets.encoders.alleles import AlleleStats, allele_stats
from kb_assets.encoders.gene_pooling import pool_genes
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.encoders.pooling import POOLINGS
from kb_assets.encoders.tokenized import model_windows
from kb_assets.genome import ReferenceGenome
from kb_assets.resources import EncoderResource, WarehouseResource
from kb_assets.settings import Recipe
from kb_assets.storage import EmbeddingCache, Warehouse

CODE_VERSION = "1"
GROUP = "diagnostics"
# pooling_comparison's cohort part uses the first this many subjects by id: 500 subjects give 124,750 pairs, enough
# for a stable rank correlation, while a 20,000-subject cohort would give 2·10^8 and a forward pass per variant.
MAX_COHORT_SUBJECTS = 500
# Subject gene vectors are pooled this many genes at a time (memory: subjects × genes × hidden size floats).
GENES_PER_BLOCK = 200
Q_THRESHOLD = 0.05
SHOWN_ROWS = 15


def _markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A small table as markdown (floats rounded)."""
    def cell(value) -> str:
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _reference_stats(store: Warehouse, chrom: str, settings: Recipe, identity: CheckpointIdentity,
                     encoder: EncoderResource) -> tuple[diagnostics.ReferenceStats, int]:
    """Both strands of the chromosome's reference regions, from the windows gene_embeddings cached."""
    options = settings.encoder
    return diagnostics.reference_stats(
        store.read_partition("reference_sequences", chrom).to_pandas(),
        store.read_partition("tokenized_genes/tiles", chrom).to_pandas(),
        store.read_partition("tokenized_genes/allele_tiles", chrom).to_pandas(),
        identity.tokenizer, EmbeddingCache(store, embedding_key(identity, options)),
        window_embedder(encoder, identity, options), identity.hidden_size, options.window_tokens,
        options.window_overlap)


def _model_facts(identity: CheckpointIdentity, settings: Recipe) -> dict:
    options = settings.encoder
    return {
        "model_id": identity.model_id,
        "model_sha256": identity.model_sha256,
        "tokenizer_version": identity.tokenizer_version,
        "window_tokens": options.window_tokens,
        "window_overlap": options.window_overlap,
        "dtype": identity.dtype,
        "device": identity.device,
        "region_to_gene": settings.aggregation.region_to_gene,
    }


def build_diagnostic_assets(recipe: Recipe, max_subjects: int = MAX_COHORT_SUBJECTS) -> list:
    embedding_code = (f"{CODE_VERSION}-"
                      f"{recipe.fingerprint('reference', 'regions', 'haplotypes', 'encoder', 'aggregation')}")
    kinds = {"pytorch", "parquet"}

    @dg.asset(group_name=GROUP, code_version=embedding_code,
              deps=["reference_sequences", "tokenized_genes", "gene_embeddings", input_key("checkpoint")],
              pool="gpu", kinds=kinds)
    def rc_stability(
        context: dg.AssetExecutionContext, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """How much RC averaging changes the reference vectors, and where: per gene (and region) the cosine between
        embed(forward) and embed(reverse complement), each embedded alone, and between embed(forward) and their
        average (the recipe's vector); summaries by chromosome and gene length; the genes that move most."""
        settings = recipe.checked()
        store = warehouse.get()
        identity = encoder.identity()
        chromosomes = gene_chromosomes(store, settings, ("reference_sequences", "tokenized_genes/tiles"))
        pooling = settings.encoder.pooling
        frames, forward, reverse, embedded = [], [], [], 0
        for chrom in chromosomes:
            reference, embedded_now = _reference_stats(store, chrom, settings, identity, encoder)
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
            {"rc_stability": arrow_table(genes), "rc_stability/regions": arrow_table(result.regions),
             "rc_stability/summary": arrow_table(result.summary)},
            facts={**_model_facts(identity, settings), "pooling_strategy": settings.encoder.pooling,
                   "rc_mode": settings.encoder.rc, "compared": "each strand embedded alone vs their average",
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

    @dg.asset(group_name=GROUP, code_version=f"{embedding_code}-s{max_subjects}",
              deps=["reference_sequences", "subject_haplotypes", "tokenized_genes", "gene_embeddings",
                    input_key("checkpoint")],
              pool="gpu", kinds=kinds)
    def pooling_comparison(
        context: dg.AssetExecutionContext, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Mean vs CLS vs max token pooling: per gene the cosine between the strategies' reference vectors; per gene
        and strategy the half-split window stability; per pair of strategies the Spearman correlation of
        subject-to-subject distances over the first `max_subjects` cohort subjects by id (see
        kb_assets.diagnostics.pooling for the exact definitions)."""
        settings = recipe.checked()
        options = settings.encoder
        region_to_gene = settings.aggregation.region_to_gene
        store = warehouse.get()
        identity = encoder.identity()
        chromosomes = gene_chromosomes(store, settings, ("reference_sequences", "tokenized_genes",
                                                         "gene_embeddings/subjects"))
        subjects, n_eligible = diagnostics.cohort_subjects(
            [store.read_partition("gene_embeddings/subjects", c).to_pandas() for c in chromosomes], max_subjects)
        squared_distances = {p: np.zeros((len(subjects), len(subjects))) for p in POOLINGS}
        gene_vectors = {p: [] for p in POOLINGS}
        region_frames, half_splits, embedded = [], [], 0
        for chrom in chromosomes:
            reference, embedded_now = _reference_stats(store, chrom, settings, identity, encoder)
            embedded += embedded_now
            regions = reference.regions
            sample = _sampled_alleles(store, chrom, subjects, identity, options, encoder)
            for pooling in POOLINGS:
                # Gene and subject vectors as the recipe makes them (its RC mode), half splits on the forward strand.
                gene_vectors[pooling].append(diagnostics.pool_regions(
                    regions, reference.vectors(pooling, options.rc), region_to_gene))
                _add_subject_distances(squared_distances[pooling], regions, sample, pooling, region_to_gene)
                half_splits.append(diagnostics.half_split_cosines(
                    regions, reference.tile_region, reference.tile_order, reference.tiles.vectors(pooling),
                    reference.tiles.counts, region_to_gene).assign(strategy=pooling))
            region_frames.append(regions)
        genes = diagnostics.gene_table(pd.concat(region_frames, ignore_index=True))
        pair_cosines = diagnostics.strategy_cosines(genes, {p: np.concatenate(v) for p, v in gene_vectors.items()})
        half_split = pd.concat(half_splits, ignore_index=True)[
            ["gene_id", "gene_name", "chrom", "strategy", "n_tiles", "half_split_cosine"]]
        agreement = diagnostics.distance_rank_agreement(squared_distances)

        mean_cosines = pair_cosines.groupby(["strategy_a", "strategy_b"], sort=False)["cosine"].mean()
        mean_half_split = half_split.groupby("strategy", sort=False)["half_split_cosine"].mean()
        return publish(
            context, store, settings,
            {"pooling_comparison": arrow_table(pair_cosines), "pooling_comparison/half_split": arrow_table(half_split),
             "pooling_comparison/distance_agreement": arrow_table(agreement)},
            facts={**_model_facts(identity, settings), "rc_mode": options.rc, "strategies": list(POOLINGS),
                   "pooling_strategy": options.pooling, "max_subjects": max_subjects,
                   "subjects": f"the first {len(subjects)} of {n_eligible} cohort subjects by id",
                   **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS)},
            metadata={
                "n_genes": len(genes),
                "n_subjects_compared": len(subjects),
                "subjects_eligible": n_eligible,
                **{f"mean_cosine/{a}_vs_{b}": round(float(v), 6) for (a, b), v in mean_cosines.items()},
                **{f"mean_half_split_cosine/{s}": round(float(v), 6) for s, v in mean_half_split.items()},
                **{f"spearman_rho/{r.strategy_a}_vs_{r.strategy_b}": round(float(r.spearman_rho), 6)
                   for r in agreement.itertuples()},
                "genes_with_one_tile": int((half_split.loc[half_split["strategy"] == POOLINGS[0], "n_tiles"]
                                            == 1).sum()),
                "distance_agreement": dg.MetadataValue.md(_markdown(agreement)),
                "cosine_plot": png_markdown(plots.pooling_png(pair_cosines, half_split),
                                            "per-gene cosine between strategies, and half-split stability"),
                "rank_agreement_plot": png_markdown(plots.rank_agreement_png(agreement, POOLINGS),
                                                    "Spearman ρ of subject-to-subject distances "
                                                    f"({len(subjects)} subjects)"),
                "embedded_windows": embedded,
            },
        )

    @dg.asset(group_name=GROUP, code_version=f"{CODE_VERSION}-{recipe.fingerprint('reference', 'regions')}",
              deps=["gene_annotations", "gene_set", input_key("tokenizer")], kinds={"parquet"})
    def bpe_token_report(
        context: dg.AssetExecutionContext, encoder: EncoderResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """How the checkpoint's BPE tokenizer cuts the gene set's exons, UTRs, CDS, introns and promoters: token
        lengths, bp per token, the most frequent tokens, their enrichment in exons vs introns/promoters (log odds,
        chi-square or Fisher p, BH q) and whether token boundaries in CDS fall between codons (see
        kb_assets.diagnostics.tokens)."""
        settings = recipe.checked()
        store = warehouse.get()
        identity = encoder.identity()
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
            {"bpe_token_report": arrow_table(tokens), "bpe_token_report/region_types": arrow_table(report.region_types),
             "bpe_token_report/token_lengths": arrow_table(report.token_lengths),
             "bpe_token_report/codon_frame": arrow_table(report.codon_frame)},
            facts={
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


@dataclass(frozen=True)
class _SampledAlleles:
    """The alleles the sampled subjects carry on one chromosome, their statistics, and who carries which."""

    alleles: pd.DataFrame  # region_id, allele
    stats: AlleleStats
    assignments: pd.DataFrame  # subject_index, region_id, haplotype, allele (sampled subjects only)
    subject_indices: np.ndarray  # sorted
    row_subject_index: np.ndarray  # subject_index of each row of the distance matrix (subjects as given)
    ploidy: int


def _sampled_alleles(store: Warehouse, chrom: str, subjects: list[str], identity: CheckpointIdentity,
                     options, encoder: EncoderResource) -> _SampledAlleles:
    """Only the sampled subjects' rows and the windows of the alleles they carry are read."""
    kept = store.read_partition("gene_embeddings/subjects", chrom).to_pandas()
    index_of = kept.set_index("subject_id")["subject_index"]
    rows = index_of.reindex(subjects).to_numpy(np.int64)
    indices = np.sort(rows)
    assignments = store.read_partition("subject_haplotypes/assignments", chrom,
                                       filters=[("subject_index", "in", indices.tolist())]).to_pandas()
    allele_tiles = store.read_partition("tokenized_genes/allele_tiles", chrom).to_pandas()
    carried = set(zip(assignments["region_id"].astype(str), assignments["allele"]))
    needed = allele_tiles[(allele_tiles["allele"] == 0) | pd.Series(
        list(zip(allele_tiles["region_id"], allele_tiles["allele"]))).isin(carried).to_numpy()].reset_index(drop=True)
    tile_numbers = sorted({int(t) for tiles in needed["tiles"] for t in tiles})
    windows = store.read_partition("tokenized_genes", chrom, filters=[("tile", "in", tile_numbers)])
    window_stats, _ = EmbeddingCache(store, embedding_key(identity, options)).fill(
        model_windows(windows), identity.hidden_size, window_embedder(encoder, identity, options))
    local = pd.Series(np.arange(len(tile_numbers)), index=tile_numbers)
    frame = windows.select(["tile", "reverse_complement"]).to_pandas()
    frame["tile"] = local.reindex(frame["tile"]).to_numpy()
    stats = allele_stats(frame, window_stats, needed["tiles"].map(lambda t: local.reindex(list(t)).tolist()),
                         len(tile_numbers), options.rc == "average")
    ploidy = store.read_facts("subject_haplotypes/assignments", chrom)["ploidy"]
    return _SampledAlleles(needed[["region_id", "allele"]], stats, assignments, indices, rows, ploidy)


def _add_subject_distances(total: np.ndarray, regions: pd.DataFrame, sample: _SampledAlleles, pooling: str,
                           region_to_gene: str) -> None:
    """Add one chromosome's gene-by-gene squared distances between the sampled subjects (rows of `total`)."""
    if not len(sample.row_subject_index):
        return
    genes = pool_genes(regions, sample.alleles, sample.stats.vectors(pooling), sample.stats.forward.counts == 0,
                       sample.assignments,
                       sample.subject_indices, sample.ploidy, region_to_gene)
    for gene_order, gene_rows in genes.vectors.groupby("gene_order", sort=True):
        matrix = genes.matrix[gene_rows.sort_values("code").index.to_numpy()]
        carried = genes.assignments[genes.assignments["gene_order"] == gene_order]
        codes = pd.Series(carried["code"].to_numpy(), index=carried["subject_index"].to_numpy())
        diagnostics.add_squared_distances(
            total, matrix[codes.reindex(sample.row_subject_index, fill_value=0).to_numpy(np.int64)])
