"""tokenized_genes and gene_embeddings: vectors against an independent oracle, the cache, deletions, metadata,
checks."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pysam import bcftools

from kb_assets.encoders import chromosome as chromosome_module
from kb_assets.encoders import engine as engine_module
from kb_assets.encoders import load_encoder
from kb_assets.genome import ReferenceGenome, extract_regions, load_annotation, resolve_gene_set
from kb_assets.storage import Warehouse
from kb_assets_tests.assets.helpers import check_evaluations, latest_check_evaluation, metadata
from kb_assets_tests.genome.conftest import write_vcf

EMBEDDING_METADATA = (
    "model_id", "model_sha256", "tokenizer_version", "rc_mode", "rc_averaged", "pooling_strategy", "window_tokens",
    "window_stride", "tile_bp", "tile_context_bp", "dtype", "device", "device_kind", "tokens_per_second",
    "padding_fraction", "cache_hits", "embedded_windows", "embedded_tokens",
)
TOKENIZED_METADATA = ("tokenizer_version", "bpe_vocab_size", "bp_per_token", "n_windows", "max_tokens", "top_tokens")


@pytest.fixture
def recipe(make_recipe):
    return make_recipe(encoder={"dtype": "float32"})


def gene_vectors(recipe, chrom: str | None = None) -> pd.DataFrame:
    """The user-facing view: one row per subject × gene."""
    with duckdb.connect(str(Warehouse(recipe.warehouse.root).catalog_path), read_only=True) as connection:
        where = "where chrom = ?" if chrom else ""
        return connection.execute(f"select * from gene_embeddings {where} order by subject_id, gene_order",
                                  [chrom] if chrom else []).df()


def regions_of(recipe, genes: list[str], chrom: str) -> pd.DataFrame:
    """The genes' exon regions on `chrom`, straight from the domain functions (no Dagster)."""
    annotation = load_annotation(recipe.inputs.gtf)
    return extract_regions(ReferenceGenome(recipe.inputs.fasta), annotation, resolve_gene_set(genes, annotation),
                           chrom, "exons")


def test_metadata_names_model_tokenizer_and_settings(recipe, materialize):
    results = materialize(recipe, partitions=["chr2"])
    meta = metadata(results, "gene_embeddings", "chr2")
    assert set(EMBEDDING_METADATA) <= set(meta)
    assert meta["rc_mode"] == "average" and meta["rc_averaged"] is True
    assert meta["pooling_strategy"] == "mean" and (meta["tile_bp"], meta["tile_context_bp"]) == (2000, 200)
    assert meta["dtype"] == "float32" and meta["device"] == "cpu" and meta["device_kind"] == "cpu"
    assert meta["window_stride"] == 512 - 2 - 64
    assert meta["tokens_per_second"] > 0 and 0 <= meta["padding_fraction"] <= 0.1
    assert meta["model_id"] == "DNABERT-2-demo"
    assert meta["n_subjects"] == 220 and meta["n_genes"] == 2  # SCN2A_demo, CHD8_demo
    assert meta["embedded_tokens"] > 0 and meta["embedded_windows"] > 0

    tokenized = metadata(results, "tokenized_genes", "chr2")
    assert set(TOKENIZED_METADATA) <= set(tokenized)
    assert tokenized["tokenizer_version"] == meta["tokenizer_version"]
    assert tokenized["bpe_vocab_size"] == 4096
    assert 3.0 < tokenized["bp_per_token"] < 8.0
    assert tokenized["max_tokens"] <= 512
    view = gene_vectors(recipe, "chr2")
    assert len(view) == 221 * 2 and set(view["subject_id"]) >= {"REF"}


def test_gene_vectors_equal_the_model_on_bcftools_consensus_haplotypes(make_recipe, materialize, tmp_path):
    """End to end against independent oracles: each subject's exon sequences from `bcftools consensus`, embedded
    one by one with the encoder's plain API (whole exon, both strands averaged), pooled by reference length and
    averaged over the two haplotypes, give the vector the pipeline stored for that subject."""
    genes = ["CHD8_demo", "SCN2A_demo"]
    base = make_recipe("base", genes=genes, encoder={"dtype": "float32"})
    regions = regions_of(base, genes, "chr2")
    genome = ReferenceGenome(base.inputs.fasta)
    rng = np.random.default_rng(5)
    samples = [f"p{i}" for i in range(8)]
    records = []
    for region in regions.itertuples():
        for position in sorted(rng.choice(np.arange(region.start + 2, region.end - 4), 3, replace=False)):
            ref = genome.fetch("chr2", int(position), int(position) + 3)
            alt = rng.choice([f"{'ACGT'[('CGTA'.index(ref[0]))]}{ref[1:]}", ref[0], ref + "GT"])
            calls = [f"{a}|{b}" for a, b in (rng.random((len(samples), 2)) < 0.4).astype(int)]
            records.append(("chr2", int(position) + 1, ref, str(alt), calls))
    records = sorted({r[1]: r for r in records}.values(), key=lambda r: r[1])
    # Keep records that do not overlap the previous one (bcftools and the builder resolve overlaps differently).
    kept = [records[0]]
    for record in records[1:]:
        if record[1] > kept[-1][1] + len(kept[-1][2]):
            kept.append(record)
    vcf = write_vcf(tmp_path / "phased.vcf.gz", samples, kept, contigs={"chr2": genome.length("chr2")})
    recipe = make_recipe("phased", genes=genes, encoder={"dtype": "float32", "tile_bp": None},
                         haplotypes={"mode": "phased"}, inputs={"vcf": str(vcf)})
    materialize(recipe, partitions=["chr2"])
    stored = gene_vectors(recipe, "chr2").set_index(["subject_id", "gene_name"])

    encoder = load_encoder(recipe.inputs.checkpoint, device="cpu", dtype="float32")
    pieces = tmp_path / "exons.fa"
    pieces.write_text("".join(f">chr2:{r.start + 1}-{r.end}\n{genome.fetch('chr2', r.start, r.end)}\n"
                              for r in regions.itertuples()))
    complement = str.maketrans("ACGTN", "TGCAN")
    for subject in samples[:4]:
        haplotype_vectors = []
        for haplotype in (1, 2):
            fasta = bcftools.consensus("-f", str(pieces), "-s", subject, "-H", str(haplotype), str(vcf))
            consensus = {name: body.replace("\n", "") for name, body in
                         (record.split("\n", 1) for record in fasta.split(">")[1:])}
            sequences = [consensus[f"chr2:{r.start + 1}-{r.end}"] for r in regions.itertuples()]
            sequences = [s.translate(complement)[::-1] if strand == "-" else s
                         for s, strand in zip(sequences, regions["strand"])]
            haplotype_vectors.append(encoder.embed(sequences).astype(np.float64))
        for gene in genes:
            rows = (regions["gene_name"] == gene).to_numpy()
            weights = regions.loc[rows, "length"].to_numpy(np.float64)
            expected = np.mean([weights @ v[rows] / weights.sum() for v in haplotype_vectors], axis=0)
            np.testing.assert_allclose(stored.loc[(subject, gene), "vector"], expected, atol=2e-5, rtol=0)


def test_a_deletion_of_whole_exons_leaves_the_other_exons_and_flags_a_gene_with_none(make_recipe, materialize,
                                                                                      tmp_path):
    genes = ["KCNQ2_demo", "CHD8_demo"]  # a single-exon gene and a multi-exon gene, both on chr2
    base = make_recipe("base", genes=genes, encoder={"dtype": "float32"})
    regions = regions_of(base, genes, "chr2")
    genome = ReferenceGenome(base.inputs.fasta)
    single = regions[regions["gene_name"] == "KCNQ2_demo"].iloc[0]
    second = regions[(regions["gene_name"] == "CHD8_demo") & (regions["region_index"] == 2)].iloc[0]
    # Each deletion starts at the base before the exon (the VCF anchor) and removes the whole exon.
    records = [("chr2", int(r.start), genome.fetch("chr2", int(r.start) - 1, int(r.end)),
                genome.fetch("chr2", int(r.start) - 1, int(r.start)), ["1|0", "1|1", "0|0"])
               for r in sorted([single, second], key=lambda r: r.start)]
    vcf = write_vcf(tmp_path / "deleted.vcf.gz", ["het", "hom", "none"], records,
                    contigs={"chr2": genome.length("chr2")})
    encoder = load_encoder(base.inputs.checkpoint, device="cpu", dtype="float32")
    chd8 = regions[regions["gene_name"] == "CHD8_demo"]
    exon_vectors = encoder.embed(chd8["sequence"].tolist()).astype(np.float64)
    weights = chd8["length"].to_numpy(np.float64)
    without_second = (chd8["region_index"] != 2).to_numpy()
    full = weights @ exon_vectors / weights.sum()
    partial = weights[without_second] @ exon_vectors[without_second] / weights[without_second].sum()

    for mode, empty_units in (("phased", 6), ("alt_if_present", 4)):
        recipe = make_recipe(mode, genes=genes, encoder={"dtype": "float32"}, haplotypes={"mode": mode},
                             inputs={"vcf": str(vcf)})
        results = materialize(recipe, partitions=["chr2"])
        meta = metadata(results, "gene_embeddings", "chr2")
        assert meta["empty_region_haplotypes"] == empty_units
        assert meta["genes_with_every_region_deleted"] == 1
        stored = gene_vectors(recipe, "chr2").set_index(["subject_id", "gene_name"])["vector"]
        np.testing.assert_array_equal(stored[("hom", "KCNQ2_demo")], np.zeros(encoder.hidden_size))
        np.testing.assert_allclose(stored[("hom", "CHD8_demo")], partial, atol=2e-5)
        np.testing.assert_allclose(stored[("none", "CHD8_demo")], full, atol=2e-5)
        if mode == "phased":
            # One haplotype keeps the exon: the gene is that haplotype's; CHD8 averages one full and one partial.
            np.testing.assert_array_equal(stored[("het", "KCNQ2_demo")], stored[("REF", "KCNQ2_demo")])
            np.testing.assert_allclose(stored[("het", "CHD8_demo")], (full + partial) / 2, atol=2e-5)
        else:
            np.testing.assert_array_equal(stored[("het", "KCNQ2_demo")], np.zeros(encoder.hidden_size))
        flags = pq.read_table(Warehouse(recipe.warehouse.root).partition_file("gene_embeddings/vectors",
                                                                             "chr2")).to_pandas()
        assert flags.loc[flags["all_regions_deleted"], "gene_name"].tolist() == ["KCNQ2_demo"]


def test_an_unchanged_rerun_tokenizes_and_embeds_nothing(recipe, materialize, monkeypatch):
    first = materialize(recipe, partitions=["chr2"])
    assert metadata(first, "gene_embeddings", "chr2")["embedded_windows"] > 0

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran although every window was cached")

    monkeypatch.setattr(chromosome_module, "run_windows", forbidden)
    second = materialize(recipe, partitions=["chr2"])
    meta = metadata(second, "gene_embeddings", "chr2")
    assert meta["embedded_windows"] == 0 and "tokens_per_second" not in meta
    assert meta["throughput"] == "nothing embedded: every window came from the cache"
    assert meta["cache_hits"] == metadata(first, "gene_embeddings", "chr2")["embedded_windows"]
    assert metadata(second, "tokenized_genes", "chr2")["tiles_tokenized_now"] == 0
    assert check_evaluations(second, "gene_embeddings")["rc_invariance"][-1].passed


def test_another_pooling_reuses_every_window(make_recipe, materialize):
    mean = make_recipe("mean", encoder={"dtype": "float32"})
    materialize(mean, partitions=["chr2"])
    cls = make_recipe("cls", encoder={"dtype": "float32", "pooling": "cls"},
                      warehouse={"root": str(mean.warehouse.root)})
    before = gene_vectors(mean, "chr2")
    meta = metadata(materialize(cls, partitions=["chr2"]), "gene_embeddings", "chr2")
    assert meta["pooling_strategy"] == "cls"
    assert meta["embedded_windows"] == 0 and meta["cache_hits"] > 0  # the cache holds every strategy
    after = gene_vectors(cls, "chr2")
    assert not np.allclose(np.stack(before["vector"]), np.stack(after["vector"]))


def test_tiles_agree_with_whole_region_windows(make_recipe, materialize):
    """Anchored tiles (2 kb + 200 bp context) against embedding each region whole (one tile, the same context): a
    region within one tile is embedded identically, a longer one moves far less than regions differ from each other
    (the README's agreement figure on the demo)."""
    tiled = make_recipe("tiled", genes=None, encoder={"dtype": "float32"})
    whole = make_recipe("whole", genes=None, encoder={"dtype": "float32", "tile_bp": None})
    vectors = {}
    for name, recipe in (("tiled", tiled), ("whole", whole)):
        materialize(recipe, partitions=["chr2"])
        alleles = Warehouse(recipe.warehouse.root).read_partition("gene_embeddings/alleles", "chr2").to_pandas()
        vectors[name] = alleles[alleles["allele"] == 0].set_index("region_id")["vector"]
    lengths = Warehouse(tiled.warehouse.root).read_partition("reference_sequences", "chr2").to_pandas().set_index(
        "region_id")["length"]
    a = np.stack(vectors["tiled"].to_numpy())
    b = np.stack(vectors["whole"].reindex(vectors["tiled"].index).to_numpy())
    moved = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    long = lengths.reindex(vectors["tiled"].index).to_numpy() > 2000
    assert long.any() and (~long).any()
    assert np.all(moved[~long] == 0.0)
    apart = np.linalg.norm(b[:, None] - b[None], axis=2)[np.triu_indices(len(b), 1)] / np.linalg.norm(b, axis=1).mean()
    assert 0 < moved[long].max() < 1e-2 * np.median(apart)


def test_rerunning_one_partition_leaves_the_others_untouched(recipe, materialize):
    materialize(recipe)
    warehouse = Warehouse(recipe.warehouse.root)
    chr1 = warehouse.partition_file("gene_embeddings/vectors", "chr1")
    before = (chr1.stat().st_mtime_ns, chr1.read_bytes())
    materialize(recipe, partitions=["chr2"])
    assert (chr1.stat().st_mtime_ns, chr1.read_bytes()) == before


def test_subjects_without_variants_share_the_reference_vector(recipe, materialize):
    materialize(recipe, partitions=["chrX"])
    warehouse = Warehouse(recipe.warehouse.root)
    assignments = pq.read_table(warehouse.partition_file("subject_haplotypes/assignments", "chrX")).to_pandas()
    subjects = pq.read_table(warehouse.partition_file("subject_haplotypes/subjects", "chrX")).to_pandas()
    regions = pq.read_table(warehouse.partition_file("reference_sequences", "chrX")).to_pandas()
    mecp2_regions = set(regions.loc[regions["gene_name"] == "MECP2_demo", "region_id"])
    carriers = set(subjects.set_index("subject_index").loc[
        assignments.loc[assignments["region_id"].isin(mecp2_regions), "subject_index"], "subject_id"])
    view = gene_vectors(recipe, "chrX").query("gene_name == 'MECP2_demo'").set_index("subject_id")["vector"]
    reference = view["REF"]
    identical = {subject: bool(np.array_equal(vector, reference)) for subject, vector in view.items()
                 if subject != "REF"}
    assert {s for s, same in identical.items() if not same} <= carriers
    assert 0 < sum(identical.values()) < len(identical)


def test_checks_pass_on_good_vectors(recipe, materialize):
    results = materialize(recipe, partitions=["chr2"])
    meta = metadata(results, "gene_embeddings", "chr2")
    # DNABERT-2-shaped random weights are not RC-equivariant: the strands' vectors differ before averaging.
    assert 0.0 < meta["strand_cosine_median"] < 0.9999
    assert meta["forward_vs_rc_cosine"].startswith("![cosine of each reference region")
    checks = check_evaluations(results, "gene_embeddings")
    assert checks["vectors_finite_and_complete"][-1].passed
    assert checks["rc_invariance"][-1].passed
    assert check_evaluations(results, "tokenized_genes")["tokenizer_unchanged"][-1].passed


def test_planted_nan_fails_the_finite_check(recipe, materialize, monkeypatch):
    real_pool = engine_module.pool_counted

    def pool_with_nan(hidden, counted):
        stats = real_pool(hidden, counted)
        stats.sums[0, 0] = np.nan
        return stats

    monkeypatch.setattr(engine_module, "pool_counted", pool_with_nan)
    with pytest.raises(dg.DagsterError):
        # The check is blocking: the run fails, and nothing downstream runs on the bad vectors.
        materialize(recipe, partitions=["chr2"])
    evaluation = latest_check_evaluation(materialize.instance, "gene_embeddings", "vectors_finite_and_complete")
    assert not evaluation.passed
    assert evaluation.metadata["non_finite_vectors"].value > 0


def test_pinned_tokenizer_mismatch_fails_its_check(make_recipe, materialize):
    pinned = make_recipe(encoder={"dtype": "float32", "tokenizer_sha256": "0" * 64})
    with pytest.raises(dg.DagsterError):
        materialize(pinned, partitions=["chr2"])
    evaluation = latest_check_evaluation(materialize.instance, "tokenized_genes", "tokenizer_unchanged")
    assert not evaluation.passed
    assert evaluation.metadata["expected"].value == "0" * 64
