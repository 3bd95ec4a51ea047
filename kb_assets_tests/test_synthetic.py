"""The synthetic cohort generator at tiny scale (three hg38 contigs scaled down, 50 subjects) and the cohort
benchmark harness end to end on an even smaller input: the properties the benchmarks rely on, each checked
against an independent reading of the written files."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import cyvcf2
import numpy as np
import pandas as pd
import pysam
import pytest
from scipy import stats

from kb_assets.benchmarks import synthetic
from kb_assets.benchmarks.cohort import _TreeSampler, fit_memory_exponents, format_report, run_cohort_benchmark
from kb_assets.benchmarks.synthetic import (
    GENE_SET,
    HG38_CONTIGS,
    draw_sites,
    generate_cohort_inputs,
    hg38_contigs,
    pooled_exon_lengths,
)
from kb_assets.genome import load_annotation, read_gene_set, resolve_gene_set

CONTIGS = ["chr2", "chr5", "chrX"]
SCALE = 0.005
N_SUBJECTS = 50


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return generate_cohort_inputs(tmp_path_factory.mktemp("synthetic"), N_SUBJECTS,
                                  contigs=hg38_contigs(CONTIGS, scale=SCALE), variants_per_kb=3.0)


def test_contigs_have_hg38_lengths_scaled_and_n_runs_at_telomeres_and_centromeres(inputs):
    expected = {name: round(HG38_CONTIGS[name] * SCALE) for name in CONTIGS}
    assert inputs.contigs == expected
    with pysam.FastaFile(str(inputs.fasta)) as fasta:  # reads the .fai the generator wrote
        assert dict(zip(fasta.references, fasta.lengths)) == expected
        for name, length in expected.items():
            sequence = fasta.fetch(name)
            assert set(sequence) == set("ACGTN")
            assert sequence[:100] == "N" * 100 and sequence[-100:] == "N" * 100
            start, end = synthetic.centromere_run(name, length)
            assert sequence[start:end] == "N" * (end - start) and 0 < start < end < length
            bases = np.frombuffer(sequence.replace("N", "").encode(), np.uint8)
            gc = np.isin(bases, np.frombuffer(b"GC", np.uint8))
            # Blocks of ~30 kb draw their GC from N(0.41, 0.05): the contig's mean lies within 4 standard errors.
            assert abs(gc.mean() - 0.41) < 4 * 0.05 / math.sqrt(length / synthetic.GC_BLOCK_BP)
            blocks = gc[: gc.size // 20_000 * 20_000].reshape(-1, 20_000).mean(axis=1)
            assert blocks.max() - blocks.min() > 0.05, "GC should drift along the contig"
    # An independent index: samtools' own.
    built = inputs.fasta.parent / "again.fa"
    built.write_bytes(inputs.fasta.read_bytes())
    pysam.faidx(str(built))
    assert built.with_suffix(".fa.fai").read_text() == inputs.fasta.with_suffix(".fa.fai").read_text()


def test_annotation_parses_and_the_gene_set_resolves(inputs):
    annotation = load_annotation(inputs.gtf)
    genes = annotation.genes
    expected_genes = sum(synthetic.GENCODE_GENES[name] * SCALE for name in CONTIGS) + len(inputs.gene_set_genes)
    assert abs(len(genes) - expected_genes) < 4 * math.sqrt(expected_genes)
    assert set(genes.chrom) == set(CONTIGS) and genes.gene_id.is_unique and genes.gene_name.is_unique
    assert {"protein_coding", "lncRNA", "processed_pseudogene"} <= set(genes.gene_type)
    with pysam.FastaFile(str(inputs.fasta)) as fasta:
        for row in annotation.exons.itertuples():
            assert "N" not in fasta.fetch(row.chrom, row.start, row.end), "an exon lies in an N run"
    coding = annotation.transcripts[annotation.transcripts.cds_length > 0]
    assert (coding.cds_length % 3 == 0).all() and coding.is_mane_select.any()

    entries = read_gene_set(inputs.gene_set)
    assert list(entries) == [g.name for g in GENE_SET if g.chrom in CONTIGS] == inputs.gene_set_genes
    resolved = resolve_gene_set(entries, annotation, inputs.gene_set)
    assert set(resolved.transcript_choice) == {"ensembl_canonical"}
    assert resolved.groupby("chrom").size().to_dict() == {"chr2": 8, "chr5": 9, "chrX": 3}
    exons = annotation.exons[annotation.exons.transcript_id.isin(resolved.transcript_id)]
    last = exons.loc[exons.groupby("transcript_id").exon_number.idxmax()]
    long_genes = {g.name for g in GENE_SET if g.long_last_exon and g.chrom in CONTIGS}
    long_transcripts = resolved.loc[resolved.gene_name.isin(long_genes), "transcript_id"]
    assert ((last.end - last.start)[last.transcript_id.isin(long_transcripts)] >= 3_500).all()


def test_exon_lengths_are_log_normal_with_median_150_and_5_percent_over_2kb():
    lengths = pooled_exon_lengths(40_000)
    assert 130 <= np.median(lengths) <= 170
    assert 0.035 <= (lengths > 2_000).mean() <= 0.07
    # Log-normal internal exons: log lengths of the middle exons are symmetric about their median.
    internal = np.log(synthetic.lognormal_lengths(np.random.default_rng(1), synthetic.INTERNAL_EXON, 20_000,
                                                  synthetic.EXON_BP))
    assert abs(stats.skew(internal)) < 0.1


def test_vcf_ref_matches_the_fasta_and_genotypes_are_phased(inputs):
    vcf = cyvcf2.VCF(str(inputs.vcf))
    assert vcf.samples == synthetic.subject_ids(N_SUBJECTS)
    males = synthetic.draw_males(0, N_SUBJECTS)
    covariates = pd.read_csv(inputs.covariates, sep="\t")
    assert list(covariates.subject_id) == vcf.samples and list(covariates.sex == "M") == males.tolist()
    records = 0
    with pysam.FastaFile(str(inputs.fasta)) as fasta:
        for record in vcf:
            records += 1
            assert fasta.fetch(record.CHROM, record.start, record.end) == record.REF
            genotypes = record.genotype.array()
            assert genotypes[:, 2].all(), "every call phased"
            if record.CHROM == "chrX":
                assert (genotypes[males, 0] == genotypes[males, 1]).all()
    assert records > 100
    assert len(list(vcf(f"chr5:1-{inputs.contigs['chr5']}"))) > 0  # the tabix index answers region queries
    assert set(covariates.columns) == {"subject_id", "age", "sex", *(f"pc{i}" for i in range(1, 11)), "batch",
                                       "site", "label"}
    assert covariates.age.between(40, 70).all() and set(covariates.label) == {0, 1}


def test_site_frequency_spectrum_is_neutral_and_a_tenth_are_indels():
    haplotypes = 2_000
    rng = np.random.default_rng(7)
    sites = draw_sites(rng, {"chr1": [(0, 400_000)], "chr2": [(1_000, 201_000)]}, haplotypes)
    k = sites.alt_copies
    # Density: each haplotype carries about 1 ALT allele per kb.
    assert k.sum() / haplotypes / 600 == pytest.approx(1.0, rel=0.1)
    # Neutral spectrum P(k) ∝ 1/k: observed counts in log-spaced bins against the expected ones.
    edges = np.unique(np.geomspace(1, haplotypes, 12).astype(int))
    expected_p = np.array([(1 / np.arange(a, b)).sum() for a, b in zip(edges[:-1], edges[1:])])
    expected_p /= (1 / np.arange(1, haplotypes)).sum()
    observed = np.histogram(k, bins=edges)[0]
    assert stats.chisquare(observed, expected_p / expected_p.sum() * observed.sum()).pvalue > 1e-3
    indels = (sites.kind != synthetic.SNV).mean()
    assert abs(indels - 0.1) < 3 * math.sqrt(0.09 / len(k))
    assert 1 <= sites.size[sites.kind != synthetic.SNV].min() and sites.size.max() <= 10
    assert (np.diff(sites.start[sites.chrom == "chr1"]) > 0).all()


def test_written_vcf_has_a_tenth_indels_and_linked_sites(inputs):
    records = list(cyvcf2.VCF(str(inputs.vcf)))
    indels = np.array([len(r.REF) != len(r.ALT[0]) for r in records])
    assert abs(indels.mean() - 0.1) < 4 * math.sqrt(0.09 / len(records))
    # Linkage: neighbouring common sites of one gene are correlated far beyond what the same allele counts on
    # haplotypes shuffled independently give (the permutation null).
    rng = np.random.default_rng(3)
    common = [(r.CHROM, r.start, r.genotype.array()[:, :2].ravel()) for r in records if r.CHROM != "chrX"]
    common = [site for site in common if 0.05 <= site[2].mean() <= 0.95]
    pairs = [(a[2], b[2]) for a, b in zip(common, common[1:]) if a[0] == b[0] and b[1] - a[1] < 2_000]
    assert len(pairs) >= 20
    first, second = (np.array(side, dtype=np.float64) for side in zip(*pairs))

    def mean_r2(a: np.ndarray, b: np.ndarray) -> float:
        a, b = (x - x.mean(axis=1, keepdims=True) for x in (a, b))
        return float(np.mean((a * b).sum(axis=1) ** 2 / ((a * a).sum(axis=1) * (b * b).sum(axis=1))))

    null = [mean_r2(rng.permuted(first, axis=1), second) for _ in range(200)]
    assert mean_r2(first, second) > max(null)


def test_coalescent_spectrum_is_neutral_on_average():
    """Over independent genealogies (seeds), the ALT alleles a haplotype carries per kb of exon and the allele count
    spectrum match the standard neutral expectations: P(k = 1) = 1/H(2N − 1) and P(k ≥ N) = (H(2N − 1) − H(N − 1)) /
    H(2N − 1). Tolerances: 4 standard errors, from the spread between seeds (sd 0.09/kb, 0.023 for singletons, 0.014
    for k ≥ N, measured over 12 seeds)."""
    contigs = hg38_contigs(CONTIGS, scale=SCALE)
    layout = synthetic.build_layout(0, contigs)
    genes = [gene for gene in layout.genes if gene.name in {g.name for g in GENE_SET}]
    exon_bp = sum(end - start for gene in genes
                  for start, end in synthetic._merged(e for t in gene.transcripts for e in t.exons))
    n, seeds = 50, 8
    densities, counts = [], []
    for seed in range(seeds):
        k = np.array([v.haplotypes.sum() for v in synthetic.coalescent_variants(seed, genes, n)])
        densities.append(k.sum() / (2 * n) / exon_bp * 1000)
        counts.append(k)
    k = np.concatenate(counts)
    harmonic = np.cumsum(1 / np.arange(1, 2 * n))  # harmonic[m - 1] = H(m)
    assert abs(np.mean(densities) - 1.0) < 4 * 0.09 / math.sqrt(seeds)
    assert abs((k == 1).mean() - 1 / harmonic[-1]) < 4 * 0.023 / math.sqrt(seeds)
    assert abs((k >= n).mean() - (harmonic[-1] - harmonic[n - 2]) / harmonic[-1]) < 4 * 0.014 / math.sqrt(seeds)


def test_same_seed_same_files(inputs, tmp_path):
    again = generate_cohort_inputs(tmp_path, N_SUBJECTS, contigs=inputs.contigs, variants_per_kb=3.0)
    for name in ("fasta", "gtf", "gene_set", "vcf", "covariates"):
        assert getattr(again, name).read_bytes() == getattr(inputs, name).read_bytes(), name
    assert (again.checkpoint / "tokenizer.json").read_bytes() == (inputs.checkpoint / "tokenizer.json").read_bytes()
    reused = generate_cohort_inputs(tmp_path, N_SUBJECTS, contigs=inputs.contigs, variants_per_kb=3.0)
    assert reused.seconds == {}


def test_the_tree_sampler_sees_memory_a_grandchild_holds():
    script = "import time; block = bytearray(300 << 20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
    process = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c \"{script}\"; true"])
    sampler = _TreeSampler(process.pid)
    sampler.start()
    process.wait()
    sampler.stop()
    assert sampler.peak >= 300 << 20
    assert sampler.samples[-1][0] - sampler.samples[0][0] >= 1.0


def test_memory_exponents_recover_linear_and_quadratic_growth():
    def result(n: int) -> dict:
        units = 100_000 * n
        steps = [{"asset": "subject_haplotypes", "partition": "chr1", "rise_rss": 100 * units,
                  "metadata": {"counts/non_reference_haplotypes": units}},
                 {"asset": "subject_matrix", "partition": None, "rise_rss": 1e-4 * units ** 2, "metadata": {}},
                 # Under 0.05 GiB at every size: allocator noise, left out.
                 {"asset": "gene_set", "partition": None, "rise_rss": 1e-3 * units, "metadata": {}}]
        return {"n_subjects": n, "cold": {"returncode": 0, "steps": steps}}

    fits = {fit["asset"]: fit["exponent"] for fit in fit_memory_exponents([result(n) for n in (20, 100, 470)])}
    assert fits == {"subject_matrix": pytest.approx(2.0), "subject_haplotypes": pytest.approx(1.0)}


def test_the_harness_runs_end_to_end_a_rerun_runs_nothing_and_a_forced_one_embeds_nothing(tmp_path):
    started = time.perf_counter()
    # 100 subjects: a fold trains on 80, more than the design's columns (40 batch levels, 10 PCs, age, sex).
    result = run_cohort_benchmark(100, tmp_path, contigs=hg38_contigs(["chr22"], scale=0.02),
                                  gene_set=[gene for gene in GENE_SET if gene.name == "COMT_syn"])
    cold, rerun, forced = result["cold"], result["rerun"], result["forced"]
    assert cold["returncode"] == 0, "\n".join(cold["log_tail"])
    assets = {step["asset"] for step in cold["steps"]}
    assert {"reference_genome", "gene_annotations", "gene_set", "reference_sequences", "subject_haplotypes",
            "tokenized_genes", "gene_embeddings", "covariates", "cv_folds", "subject_matrix",
            "subject_embeddings_pca"} <= assets
    assert all(step["status"] == "SUCCESS" for step in cold["steps"])
    assert cold["embedded_tokens"] > 0 and cold["embedded_windows"] > 0
    assert rerun["returncode"] == 0 and [step["asset"] for step in rerun["steps"]] == ["input_files"]
    assert forced["returncode"] == 0 and forced["embedded_tokens"] == 0
    assert {step["asset"] for step in forced["steps"]} == assets
    assert forced["cache_hits"] == cold["embedded_windows"]
    assert 0 < cold["baseline_rss"] <= cold["pipeline_peak_rss"] <= cold["peak_rss"]
    assert sum(s["seconds"] for s in cold["steps"]) <= cold["wall_s"] <= time.perf_counter() - started
    assert result["warehouse_bytes"]["embedding_cache"] > 0
    report = format_report(result)
    assert "rerun with nothing changed: " in report and "forced rerun (--all)" in report
    assert "model input tokens computed" in report
    assert (tmp_path / "results" / "cohort-n100-exons.json").is_file()
