"""gene_embeddings of one chromosome as plain Python: read what tokenized_genes and subject_haplotypes wrote, embed
the windows the cache lacks, pool them into region alleles and into the gene vectors subjects share, and check them.

The Dagster asset calls this in its own process; on a SLURM cluster the same call runs as the job
(`run_as_job`), writing into a staging folder that the orchestrator publishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from kb_assets.encoders.alleles import allele_stats
from kb_assets.encoders.engine import WindowBatch, cut_tile_windows, run_windows
from kb_assets.encoders.gene_pooling import GeneVectors, pool_genes
from kb_assets.encoders.identity import CheckpointIdentity
from kb_assets.encoders.pooling import cosine
from kb_assets.encoders.tokenized import model_windows
from kb_assets.encoders.windows import ModelWindow, mirrored_window
from kb_assets.errors import InputError
from kb_assets.genome.tiles import Tile
from kb_assets.settings import EncoderSettings
from kb_assets.storage import CacheUse, EmbeddingCache, EmbeddingKey, Warehouse, vector_column

Embedder = Callable[[list[ModelWindow]], Iterable[WindowBatch]]
RC_CHECK_SAMPLE = 4
RC_CHECK_TOLERANCE = 1e-4  # max |Δ| relative to the vector's largest |value|
# The files of a gene_embeddings partition, in the order they are written (and hashed into its data version).
DATASETS = ("gene_embeddings/vectors", "gene_embeddings/assignments", "gene_embeddings/subjects",
            "gene_embeddings/alleles")
# gene_embeddings/vectors before its vector column; explicit, so a chromosome without genes writes the same types.
GENE_VECTOR_SCHEMA = pa.schema([("gene_id", pa.string()), ("gene_name", pa.string()), ("gene_order", pa.int32()),
                                ("code", pa.int32()), ("n_subjects", pa.int64()), ("all_regions_deleted", pa.bool_())])
# Facts of the upstream partitions that every gene_embeddings partition repeats.
LINEAGE_FACTS = ("reference_version", "annotation_version", "haplotype_mode")


def encoder_dataset(encoder_name: str, dataset: str) -> str:
    """The warehouse dataset of one encoder: the primary encoder's ("") plain, a further encoder's under its name."""
    return f"{encoder_name}/{dataset}" if encoder_name else dataset


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict
    blocking_error: bool  # ERROR severity (else a warning)


@dataclass(frozen=True)
class ChromosomeEmbedding:
    genes: GeneVectors
    alleles: pd.DataFrame  # region_id, allele
    allele_vectors: np.ndarray  # [A, H] float64 (NaN rows: empty)
    empty_alleles: np.ndarray  # [A] bool
    strand_cosines: np.ndarray  # [A] forward vs reverse complement, before averaging
    kept_subjects: pd.DataFrame  # subject_index, subject_id
    use: CacheUse
    n_genes: int
    checks: tuple[CheckOutcome, ...]
    encoder_name: str = ""

    def tables(self) -> dict[str, pa.Table]:
        vectors = self.genes.vectors.astype({"gene_order": np.int32, "code": np.int32, "n_subjects": np.int64})
        tables = {
            "gene_embeddings/vectors": pa.Table.from_pandas(vectors, GENE_VECTOR_SCHEMA, preserve_index=False)
            .append_column("vector", vector_column(self.genes.matrix)),
            "gene_embeddings/assignments": pa.Table.from_pandas(self.genes.assignments, preserve_index=False),
            "gene_embeddings/subjects": pa.Table.from_pandas(self.kept_subjects, preserve_index=False),
            "gene_embeddings/alleles": pa.table({
                "region_id": pa.array(self.alleles["region_id"].astype(str)),
                "allele": pa.array(self.alleles["allele"].to_numpy(np.int32)),
                "empty": pa.array(self.empty_alleles),
                "strand_cosine": pa.array(self.strand_cosines, pa.float32(), from_pandas=True),
                "vector": vector_column(np.nan_to_num(self.allele_vectors)),
            }),
        }
        return {encoder_dataset(self.encoder_name, name): tables[name] for name in DATASETS}

    def reference_strand_cosines(self) -> np.ndarray:
        return self.strand_cosines[self.alleles["allele"].to_numpy() == 0]

    def metadata(self) -> dict:
        """What happened, for the materialization (no figures: the caller adds those)."""
        use, cosines = self.use, self.strand_cosines
        return {
            **({"tokens_per_second": round(use.tokens_per_second, 1),
                "padding_fraction": round(use.padding_fraction, 4)} if use.embedded else
               {"throughput": "nothing embedded: every window came from the cache"}),
            "embedded_windows": use.embedded,
            "embedded_tokens": use.embedded_tokens,
            "cache_hits": use.hits,
            "n_subjects": len(self.kept_subjects),
            "n_genes": self.n_genes,
            "distinct_gene_vectors": len(self.genes.vectors),
            "non_reference_subject_genes": len(self.genes.assignments),
            "empty_region_haplotypes": self.genes.empty_region_haplotypes,
            "empty_alleles": int(self.empty_alleles.sum()),
            "genes_with_every_region_deleted": int(self.genes.vectors["all_regions_deleted"].sum()),
            "strand_cosine_median": float(np.nanmedian(cosines)) if np.isfinite(cosines).any() else float("nan"),
        }


def embedding_facts(store: Warehouse, chrom: str, identity: CheckpointIdentity, options: EncoderSettings,
                    region_to_gene: str, encoder_name: str = "") -> dict:
    """The settings and versions a gene_embeddings partition is made with (its file facts and metadata)."""
    upstream = store.read_facts(encoder_dataset(encoder_name, "tokenized_genes"), chrom)
    rc_mode = identity.rc_mode(options.rc)
    specials = len(identity.tokenizer.prefix_ids) + len(identity.tokenizer.suffix_ids)
    return {
        "model_id": identity.model_id,
        "model_family": identity.family,
        "model_sha256": identity.model_sha256,
        "tokenizer_version": identity.tokenizer_version,
        "rc_mode": rc_mode,
        "rc_averaged": rc_mode == "average",
        "pooling_strategy": options.pooling,
        "region_to_gene": region_to_gene,
        "tile_bp": options.tile_bp,
        "tile_context_bp": options.tile_context_bp,
        "window_tokens": options.window_tokens,
        "window_stride": options.window_tokens - specials - options.window_overlap,
        "dtype": identity.dtype,
        "device": identity.device,
        "device_kind": identity.device.split(":")[0],
        **{key: upstream[key] for key in LINEAGE_FACTS if key in upstream},
    }


def embed_chromosome(store: Warehouse, chrom: str, identity: CheckpointIdentity, options: EncoderSettings,
                     region_to_gene: str, cache: EmbeddingCache, embed: Embedder,
                     encoder_name: str = "") -> ChromosomeEmbedding:
    """One chromosome's gene vectors from the warehouse's tokenized_genes (of the encoder named `encoder_name`,
    "" for the primary one), subject_haplotypes and reference_sequences partitions; windows the cache lacks are
    embedded with `embed` (called only then)."""
    tokenized = encoder_dataset(encoder_name, "tokenized_genes")
    tokenized_with = store.read_facts(tokenized, chrom).get("tokenizer_version")
    if tokenized_with != identity.tokenizer_version:
        raise InputError(
            identity.tokenizer.path, f"partition {chrom}",
            f"the checkpoint's tokenizer ({identity.tokenizer_version[:12]}) is not the one tokenized_genes "
            f"was materialized with ({(tokenized_with or 'none')[:12]})",
            f"materialize {tokenized} for {chrom} again, then gene_embeddings",
        )
    rc_mode = identity.rc_mode(options.rc)
    windows = store.read_partition(tokenized, chrom)
    allele_tiles = store.read_partition(f"{tokenized}/allele_tiles", chrom).to_pandas()
    tiles = store.read_partition(f"{tokenized}/tiles", chrom,
                                 columns=["tile", "sequence", "core_start", "core_end"]).to_pandas()
    assignments = store.read_partition("subject_haplotypes/assignments", chrom).to_pandas()
    subjects = store.read_partition("subject_haplotypes/subjects", chrom).to_pandas()
    ploidy = store.read_facts("subject_haplotypes/assignments", chrom)["ploidy"]
    regions = store.read_partition(
        "reference_sequences", chrom, columns=["region_id", "gene_id", "gene_name", "gene_order", "length"]
    ).to_pandas()

    window_stats, use = cache.fill(model_windows(windows), identity.hidden_size, embed)
    stats = allele_stats(windows.select(["tile", "reverse_complement"]).to_pandas(), window_stats,
                         allele_tiles["tiles"], len(tiles), rc_mode == "average")
    allele_vectors = stats.vectors(options.pooling)
    empty_alleles = stats.forward.counts == 0
    kept = subjects.loc[~subjects["excluded"], ["subject_index", "subject_id"]].reset_index(drop=True)
    genes = pool_genes(regions, allele_tiles[["region_id", "allele"]], allele_vectors, empty_alleles, assignments,
                       kept["subject_index"].to_numpy(np.int64), ploidy, region_to_gene)
    checks = (
        completeness_check(genes, regions, identity.hidden_size),
        rc_invariance_check(options, identity, tiles, allele_tiles, windows, allele_vectors, cache, embed),
    )
    return ChromosomeEmbedding(
        genes=genes, alleles=allele_tiles[["region_id", "allele"]], allele_vectors=allele_vectors,
        empty_alleles=empty_alleles, strand_cosines=stats.strand_cosines(options.pooling), kept_subjects=kept,
        use=use, n_genes=int(regions["gene_id"].nunique()), checks=checks, encoder_name=encoder_name,
    )


def completeness_check(genes: GeneVectors, regions: pd.DataFrame, hidden_size: int) -> CheckOutcome:
    """Every gene vector finite and of width H, every gene with its reference vector (code 0), every subject code
    pointing at a vector."""
    matrix = genes.matrix
    non_finite = int((~np.isfinite(matrix)).any(axis=1).sum()) if matrix.size else 0
    width = matrix.shape[1] if matrix.ndim == 2 else 0
    with_reference = set(genes.vectors.loc[genes.vectors["code"] == 0, "gene_order"])
    without_reference = sorted(set(regions["gene_order"]) - with_reference)
    codes = genes.vectors.groupby("gene_order")["code"].max()
    dangling = int((genes.assignments["code"].to_numpy() > codes.reindex(
        genes.assignments["gene_order"]).fillna(-1).to_numpy()).sum())
    return CheckOutcome(
        "vectors_finite_and_complete",
        passed=(non_finite == 0 and not without_reference and dangling == 0
                and (width == hidden_size or not len(matrix))),
        metadata={"vectors": len(matrix), "non_finite_vectors": non_finite,
                  "genes_without_reference_vector": len(without_reference), "codes_without_vector": dangling,
                  "width": int(width), "hidden_size": hidden_size},
        blocking_error=True,
    )


def rc_invariance_check(options: EncoderSettings, identity: CheckpointIdentity, tiles: pd.DataFrame,
                        allele_tiles: pd.DataFrame, windows: pa.Table, allele_vectors: np.ndarray,
                        cache: EmbeddingCache, embed: Embedder) -> CheckOutcome:
    """A few reference regions, read as their reverse complement, must give the vector the region has.

    With RC averaging the tiles are mirrored and tokenized afresh: those windows are the ones the other strand was
    embedded with, so they come from the cache (no forward pass on a rerun). For an RC-equivariant model (Caduceus-PS,
    one strand embedded) each window is mirrored in place and goes through the model: this checks the model's
    equivariance on the real windows."""
    rc_mode = identity.rc_mode(options.rc)
    if rc_mode == "none":
        return CheckOutcome("rc_invariance", True, {"rc_mode": rc_mode, "skipped": "rc_mode none embeds one "
                                                    "strand: vectors depend on the strand by design"}, False)
    reference = allele_tiles[(allele_tiles["allele"] == 0) & (allele_tiles["tiles"].map(len) > 0)]
    sample = reference.sort_values("region_id").head(RC_CHECK_SAMPLE)
    if rc_mode == "average":
        backward = _reverse_complement_tiles(options, identity, tiles, sample, cache, embed)
    else:
        backward = _mirrored_windows(options, identity, sample, windows, cache, embed)
    forward = allele_vectors[sample.index.to_numpy()]
    scale = np.maximum(np.nanmax(np.abs(forward), axis=1, initial=0.0), 1e-12)
    worst = float(np.nanmax(np.abs(forward - backward).max(axis=1, initial=0.0) / scale, initial=0.0))
    return CheckOutcome(
        "rc_invariance", passed=worst <= RC_CHECK_TOLERANCE,
        metadata={"sampled_regions": len(sample), "max_relative_difference": worst, "tolerance": RC_CHECK_TOLERANCE,
                  "rc_mode": rc_mode, "min_cosine": float(np.nanmin(cosine(forward, backward), initial=1.0))},
        blocking_error=True,
    )


def _reverse_complement_tiles(options: EncoderSettings, identity: CheckpointIdentity, tiles: pd.DataFrame,
                              sample: pd.DataFrame, cache: EmbeddingCache, embed: Embedder) -> np.ndarray:
    """The sampled regions' vectors from their tiles mirrored and tokenized afresh, both strands averaged."""
    by_number = tiles.set_index("tile")
    mirrored = [[Tile(by_number.at[t, "sequence"], int(by_number.at[t, "core_start"]),
                      int(by_number.at[t, "core_end"])).reverse_complement() for t in reversed(list(numbers))]
                for numbers in sample["tiles"]]
    flat = [tile for region in mirrored for tile in region]
    owner = np.repeat(np.arange(len(mirrored)), [len(region) for region in mirrored])
    cut = cut_tile_windows(identity.tokenizer, flat, True, options.window_tokens, options.window_overlap)
    window_stats, _ = cache.fill(cut.windows, identity.hidden_size, embed)
    frame = pd.DataFrame({"tile": cut.tile, "reverse_complement": cut.reverse_complement})
    per_region = pd.Series([[int(i) for i in np.flatnonzero(owner == r)] for r in range(len(mirrored))])
    return allele_stats(frame, window_stats, per_region, len(flat), True).vectors(options.pooling)


def _mirrored_windows(options: EncoderSettings, identity: CheckpointIdentity, sample: pd.DataFrame,
                      windows: pa.Table, cache: EmbeddingCache, embed: Embedder) -> np.ndarray:
    """The sampled regions' vectors from their own windows, each mirrored in place (one strand, no averaging)."""
    tokenizer = identity.tokenizer
    numbers = sorted({int(t) for tiles_of in sample["tiles"] for t in tiles_of})
    local = pd.Series(np.arange(len(numbers)), index=numbers)
    rows = windows.filter(pc.is_in(windows.column("tile"), pa.array(numbers, windows.column("tile").type)))
    complement = tokenizer.complement_ids()
    mirrored = [mirrored_window(w, complement, len(tokenizer.prefix_ids), len(tokenizer.suffix_ids))
                for w in model_windows(rows)]
    window_stats, _ = cache.fill(mirrored, identity.hidden_size, embed)
    frame = pd.DataFrame({"tile": local.reindex(rows.column("tile").to_numpy()).to_numpy(),
                          "reverse_complement": False})
    per_region = sample["tiles"].map(lambda tiles_of: local.reindex(list(tiles_of)).tolist()).reset_index(drop=True)
    return allele_stats(frame, window_stats, per_region, len(numbers), False).vectors(options.pooling)


def embedding_key(identity: CheckpointIdentity, options: EncoderSettings) -> EmbeddingKey:
    """The cache key of what this checkpoint computes on this kind of device with these settings."""
    return EmbeddingKey(identity.model_sha256, identity.dtype, identity.device.split(":")[0], options.compile)


class LazyEmbedder:
    """The cache's embed callable: loads the model on the first window the cache lacks (`load(device)`), after
    leasing a device when there are several (`lease()` returns the one to use), and remembers the device used."""

    def __init__(self, load: Callable[[str | None], object], batch_tokens: int,
                 lease: Callable[[], str] | None = None):
        self.load, self.batch_tokens, self.lease = load, batch_tokens, lease
        self.device: str | None = None

    def __call__(self, missing: list[ModelWindow]) -> Iterable[WindowBatch]:
        if self.device is None and self.lease is not None:
            self.device = self.lease()
        encoder = self.load(self.device)
        self.device = str(encoder.device)
        return run_windows(encoder.model, missing, unk_ids=encoder.tokenizer.unk_ids, pad_id=encoder.tokenizer.pad_id,
                           batch_tokens=self.batch_tokens, device=encoder.device)


def run_as_job(pipes, recipe_path: str, chrom: str, encoder_name: str = "") -> None:
    """The SLURM job of a gene_embeddings partition of the encoder named `encoder_name` ("" for the recipe's
    primary encoder; kb_assets.cluster.job_entry calls it): the same computation as the asset, written with its
    facts into the job's staging folder and reported through Dagster Pipes; the orchestrator publishes the files
    and catalogs them."""
    from kb_assets.cluster.job_entry import staging_dir
    from kb_assets.encoders.families import load_any_encoder
    from kb_assets.encoders.identity import checkpoint_identity
    from kb_assets.settings import load_recipe

    # The CPUs SLURM gave this job, not every core of the node.
    torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", torch.get_num_threads())))
    recipe = load_recipe(recipe_path).checked()
    options = recipe.encoder
    checkpoint = recipe.inputs.compare_with[encoder_name] if encoder_name else recipe.inputs.checkpoint
    identity = checkpoint_identity(checkpoint, options.device, options.dtype)
    store = Warehouse(recipe.warehouse.root)
    embed = LazyEmbedder(lambda device: load_any_encoder(checkpoint, device or identity.device, options.dtype,
                                                         compile=options.compile), options.batch_tokens)
    result = embed_chromosome(store, chrom, identity, options, recipe.aggregation.region_to_gene,
                              EmbeddingCache(store, embedding_key(identity, options)), embed, encoder_name)
    facts = {"recipe_id": recipe.recipe_id,
             **embedding_facts(store, chrom, identity, options, recipe.aggregation.region_to_gene, encoder_name),
             "encoder": encoder_name or "primary", "device": embed.device or identity.device,
             # Named as the recipe's input source: "checkpoint", or "<encoder>_checkpoint".
             "inputs": {f"{encoder_name}_checkpoint" if encoder_name else "checkpoint": {
                 "path": str(identity.weights), "sha256": identity.model_sha256}}}
    paths, data_version, facts = Warehouse(staging_dir(pipes)).write_outputs(result.tables(), chrom, facts)
    for check in result.checks:
        pipes.report_asset_check(check.name, check.passed, severity="ERROR" if check.blocking_error else "WARN",
                                 metadata=_json_safe(check.metadata))
    shown = {k: v for k, v in facts.items() if k not in ("inputs", "write_id")}
    pipes.report_asset_materialization(metadata=_json_safe({**shown, **result.metadata()}),
                                       data_version=data_version)


def _json_safe(metadata: dict) -> dict:
    """Metadata for Pipes (JSON): numpy scalars as Python numbers, non-finite floats as text."""
    safe = {}
    for key, value in metadata.items():
        value = value.item() if isinstance(value, np.generic) else value
        safe[key] = str(value) if isinstance(value, float) and not np.isfinite(value) else value
    return safe
