"""Synthetic inputs with real shapes, from one seed: the one generator behind the cohort and dedup benchmarks, and
the file writers the demo shares.

- Genome: hg38's contig lengths (chr1…chr22, chrX, chrY, chrM; or a subset, scaled down), random bases whose GC
  content drifts in isochore-like blocks around 41%, N runs of 10 kb at both ends of every nuclear contig and over
  each centromere's approximate hg38 span. Written 60 bases a line with numpy, chunk by chunk, with its .fai.
- Gene structures: exon lengths log-normal (first exon median 200 bp, internal exons 135 bp, last exon with the
  3' UTR 2.2 kb; over all exons: median ~150 bp, ~5% over 2 kb), introns log-normal (median 1.5 kb, long tail).
- Annotation: ≈60,000 genes spread over the contigs as GENCODE spreads them (protein-coding genes with one to
  several transcripts, the full-length one tagged Ensembl_canonical and MANE_Select, CDS and UTRs; lncRNAs;
  single-exon pseudogenes and small RNAs): a gzipped GENCODE-style GTF of ≈1.5M lines.
- Gene set: `GENE_SET`, 38 brain genes (suffix `_syn`: names and chromosomes of real genes, structures drawn
  like every other gene), over 15 chromosomes, chr2 and chr5 the heaviest; 12 have a long last exon (3.5–8 kb).
- Cohort: a phased, bgzipped, tabix-indexed VCF. The 2N haplotypes come from one neutral coalescent with
  recombination (msprime: constant population of 10,000, 1e-8 recombinations per bp per generation, the gene-set
  genes laid end to end), mutations only in their exons (as in a whole-exome cohort), at the rate that gives each
  haplotype `variants_per_kb` ALT alleles per kb: ALT copy counts follow P(k) ∝ 1/k in expectation and nearby
  sites are linked, as in a real population. `indel_fraction` of sites are 1–10 bp deletions or insertions; REF
  alleles are read from the FASTA; males carry one chrX haplotype, written as a homozygous call.
  (`draw_sites` + `independent_variants` place sites with 1/k counts independently of one another instead: no
  linkage, the pessimistic case the dedup benchmark measures.)
- Covariates: age, sex, pc1..pc10, batch (40 levels), site (22 assessment centres), label.
- Checkpoint: the tiny DNABERT-2 shape with a BPE tokenizer trained on 1 Mb of the genome.

Every random choice comes from a numpy Generator seeded by (seed, the name of what it draws), so each input is
reproducible on its own. Plain Python and numpy; files are written under a temporary name and renamed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

from kb_assets.encoders.checkpoint import BIN_WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_CONFIG_FILE, write_checkpoint
from kb_assets.encoders.tokenizer import TOKENIZER_FILE, train_bpe_tokenizer

Interval = tuple[int, int]  # 0-based half-open

# hg38 primary assembly contig lengths.
HG38_CONTIGS = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555, "chr5": 181_538_259,
    "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636, "chr9": 138_394_717, "chr10": 133_797_422,
    "chr11": 135_086_622, "chr12": 133_275_309, "chr13": 114_364_328, "chr14": 107_043_718, "chr15": 101_991_189,
    "chr16": 90_338_345, "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616, "chr20": 64_444_167,
    "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415, "chrM": 16_569,
}
# Approximate hg38 centromere spans, in Mb (rounded from the UCSC centromere track); chrM has none.
HG38_CENTROMERES_MB = {
    "chr1": (121.7, 125.1), "chr2": (91.8, 96.0), "chr3": (90.5, 93.7), "chr4": (49.7, 51.8), "chr5": (46.5, 50.1),
    "chr6": (58.5, 59.8), "chr7": (58.1, 61.0), "chr8": (44.0, 45.9), "chr9": (43.2, 45.5), "chr10": (39.6, 41.6),
    "chr11": (51.1, 54.4), "chr12": (34.7, 37.2), "chr13": (16.0, 18.1), "chr14": (16.0, 18.2),
    "chr15": (17.0, 19.7), "chr16": (36.3, 38.3), "chr17": (22.7, 26.9), "chr18": (15.4, 20.9),
    "chr19": (24.4, 27.2), "chr20": (25.6, 30.4), "chr21": (10.9, 13.0), "chr22": (12.9, 15.1),
    "chrX": (58.1, 61.0), "chrY": (10.3, 10.6),
}
# Genes per contig, roughly as GENCODE (v44) counts them (≈60,000 in all, rounded); chrM's 37 tiny overlapping
# genes are left out.
GENCODE_GENES = {
    "chr1": 5_400, "chr2": 4_100, "chr3": 3_100, "chr4": 2_600, "chr5": 2_900, "chr6": 3_000, "chr7": 3_000,
    "chr8": 2_400, "chr9": 2_400, "chr10": 2_300, "chr11": 3_300, "chr12": 3_000, "chr13": 1_400, "chr14": 2_300,
    "chr15": 2_200, "chr16": 2_500, "chr17": 3_000, "chr18": 1_300, "chr19": 3_000, "chr20": 1_500, "chr21": 900,
    "chr22": 1_500, "chrX": 2_500, "chrY": 500, "chrM": 0,
}
GENE_TYPES = {  # share of genes; everything but protein_coding and lncRNA is one non-coding exon
    "protein_coding": 0.33, "lncRNA": 0.31, "processed_pseudogene": 0.17, "unprocessed_pseudogene": 0.06,
    "misc_RNA": 0.05, "snRNA": 0.04, "miRNA": 0.04,
}
# Part of the name of every generated folder: bump it when the genome's bases or the cohort are drawn differently
# (changes to the genes are caught by the folder name's hash of the layout itself).
GENERATOR_VERSION = 1
TELOMERE_N = 10_000
MIN_INTERGENIC = 2_000
GC_MEAN, GC_SD, GC_RANGE = 0.41, 0.05, (0.30, 0.62)
GC_BLOCK_BP = 30_000  # mean isochore-like block length
FASTA_WIDTH = 60
_FASTA_CHUNK = FASTA_WIDTH * (1 << 17)  # bases generated and written at a time (7.9 Mb)

# Exon and intron lengths: (median bp, log-normal sigma); clipped to EXON_BP / INTRON_BP.
FIRST_EXON = (200, 0.8)  # holds the 5' UTR
INTERNAL_EXON = (135, 0.6)
LAST_EXON = (2_200, 1.0)  # holds the 3' UTR
SINGLE_EXON = (1_500, 0.8)
SHORT_NONCODING_EXON = (300, 0.9)  # pseudogenes and small RNAs
EXONS_PER_CODING_GENE = (8, 0.7)
INTRON = (1_500, 1.3)
EXON_BP, INTRON_BP = (20, 20_000), (80, 100_000)
LONG_LAST_EXON_BP = (3_500, 8_000)
CANONICAL_TAGS = ("basic", "Ensembl_canonical", "MANE_Select")
GENE_ID_BASE = 1_000_001  # ENSG00001000001…: far above real Ensembl ids

# Tiny DNABERT-2 shape (embeddings of the demo take about a minute on 2 CPU cores) and its BPE vocabulary.
CHECKPOINT_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
VOCAB_SIZE = 4096
# A checkpoint folder missing any of these is one an interrupted write left behind (the tokenizer files come last).
CHECKPOINT_FILES = (CONFIG_FILE, BIN_WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)
TOKENIZER_TRAINING_BP = 1_000_000

N_BATCHES = 40
N_SITES = 22
MALE_SHARE = 0.46
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_MAX_INDEL = 10


@dataclass(frozen=True)
class GeneSetGene:
    name: str
    chrom: str
    long_last_exon: bool = False


GENE_SET: tuple[GeneSetGene, ...] = (
    GeneSetGene("SCN1A_syn", "chr2", True), GeneSetGene("SCN2A_syn", "chr2", True), GeneSetGene("NRXN1_syn", "chr2"),
    GeneSetGene("GAD1_syn", "chr2"), GeneSetGene("ERBB4_syn", "chr2", True), GeneSetGene("ZEB2_syn", "chr2", True),
    GeneSetGene("CACNB4_syn", "chr2"), GeneSetGene("TBR1_syn", "chr2"),
    GeneSetGene("GRIA1_syn", "chr5", True), GeneSetGene("GABRA1_syn", "chr5"), GeneSetGene("GABRB2_syn", "chr5", True),
    GeneSetGene("GABRG2_syn", "chr5"), GeneSetGene("NR3C1_syn", "chr5", True), GeneSetGene("HTR4_syn", "chr5"),
    GeneSetGene("MEF2C_syn", "chr5", True), GeneSetGene("CDH18_syn", "chr5"), GeneSetGene("CAMK2A_syn", "chr5", True),
    GeneSetGene("DISC1_syn", "chr1"), GeneSetGene("NLGN1_syn", "chr3"), GeneSetGene("SNCA_syn", "chr4"),
    GeneSetGene("FOXP2_syn", "chr7"), GeneSetGene("CNTNAP2_syn", "chr7", True), GeneSetGene("RELN_syn", "chr7"),
    GeneSetGene("NTRK2_syn", "chr9"), GeneSetGene("BDNF_syn", "chr11"), GeneSetGene("GRIN2B_syn", "chr12", True),
    GeneSetGene("CACNA1C_syn", "chr12"), GeneSetGene("CHD8_syn", "chr14"), GeneSetGene("GRIN2A_syn", "chr16"),
    GeneSetGene("DLG4_syn", "chr17"), GeneSetGene("MAPT_syn", "chr17"), GeneSetGene("TCF4_syn", "chr18"),
    GeneSetGene("APP_syn", "chr21"), GeneSetGene("SHANK3_syn", "chr22", True), GeneSetGene("COMT_syn", "chr22"),
    GeneSetGene("MECP2_syn", "chrX"), GeneSetGene("FMR1_syn", "chrX"), GeneSetGene("SYN1_syn", "chrX"),
)


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator for one named draw: changing how one input is drawn leaves the others unchanged."""
    return np.random.default_rng([seed, *name.encode()])


def hg38_contigs(names: Sequence[str] | None = None, scale: float = 1.0) -> dict[str, int]:
    """hg38 contig lengths (all, or `names` in hg38 order), each multiplied by `scale` (for small test genomes)."""
    chosen = [name for name in HG38_CONTIGS if names is None or name in names]
    unknown = set(names or ()) - set(chosen)
    if unknown:
        raise ValueError(f"not hg38 contigs: {sorted(unknown)}")
    return {name: max(1, round(HG38_CONTIGS[name] * scale)) for name in chosen}


# --- gene structures -----------------------------------------------------------------------------------------------


def lognormal_lengths(rng: np.random.Generator, median_sigma: tuple[float, float], size: int,
                      bounds: tuple[int, int]) -> np.ndarray:
    median, sigma = median_sigma
    return np.clip(np.rint(np.exp(rng.normal(np.log(median), sigma, size))), *bounds).astype(np.int64)


def exon_lengths(rng: np.random.Generator, n_exons: int, long_last_exon: bool = False) -> np.ndarray:
    """Exon lengths in transcription order: first exon (with the 5' UTR), internal exons, last exon (3' UTR)."""
    if n_exons == 1:
        return lognormal_lengths(rng, SINGLE_EXON, 1, EXON_BP)
    last = (np.array([rng.integers(*LONG_LAST_EXON_BP)]) if long_last_exon
            else lognormal_lengths(rng, LAST_EXON, 1, EXON_BP))
    return np.concatenate([lognormal_lengths(rng, FIRST_EXON, 1, EXON_BP),
                           lognormal_lengths(rng, INTERNAL_EXON, n_exons - 2, EXON_BP), last])


def coding_exon_count(rng: np.random.Generator) -> int:
    return int(lognormal_lengths(rng, EXONS_PER_CODING_GENE, 1, (1, 80))[0])


def gene_exons(rng: np.random.Generator, lengths: np.ndarray) -> list[Interval]:
    """Exons as distances from the transcription start, in transcription order, separated by drawn introns."""
    introns = lognormal_lengths(rng, INTRON, len(lengths) - 1, INTRON_BP)
    exons, position = [], 0
    for length, intron in zip(lengths.tolist(), [*introns.tolist(), 0]):
        exons.append((position, position + length))
        position += length + intron
    return exons


def pooled_exon_lengths(n: int, seed: int = 0) -> np.ndarray:
    """`n` exon lengths of protein-coding genes drawn by this model (in drawing order): an exon-like length mix."""
    rng = stream(seed, "exon_lengths")
    parts, total = [], 0
    while total < n:
        lengths = exon_lengths(rng, coding_exon_count(rng))
        parts.append(lengths)
        total += len(lengths)
    return np.concatenate(parts)[:n]


# --- the annotation model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTranscript:
    """A transcript before placement: indices into its gene's exons and its CDS in spliced coordinates."""

    exon_indices: tuple[int, ...]
    coding: Interval | None
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Transcript:
    """A transcript on the genome: exons in transcription order, 0-based half-open genomic coordinates."""

    transcript_id: str
    name: str
    exons: tuple[Interval, ...]
    exon_ids: tuple[str, ...]
    coding: Interval | None  # genomic span of the CDS; None for a non-coding transcript
    protein_id: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Gene:
    """A placed gene; `principal` indexes the transcript the transcript-choice rule should pick."""

    gene_id: str
    name: str
    chrom: str
    strand: str
    gene_type: str
    start: int
    end: int
    transcripts: tuple[Transcript, ...]
    principal: int

    @property
    def gene_id_base(self) -> str:
        return self.gene_id.split(".")[0]

    @property
    def principal_transcript(self) -> Transcript:
        return self.transcripts[self.principal]


@dataclass(frozen=True)
class Layout:
    """Contigs, genes (sorted by contig and start) and N runs (sorted, per contig) of a synthetic genome."""

    contigs: dict[str, int]
    genes: tuple[Gene, ...]
    n_runs: dict[str, tuple[Interval, ...]]

    @cached_property
    def _by_name(self) -> dict[str, Gene]:
        return {gene.name: gene for gene in self.genes}

    def gene(self, name: str) -> Gene:
        return self._by_name[name]

    def on(self, chrom: str) -> list[Gene]:
        return [gene for gene in self.genes if gene.chrom == chrom]


def coding_span(exons: Sequence[Interval], utr5: int, utr3: int) -> Interval:
    """The CDS in spliced coordinates: between the UTRs, a whole number of codons."""
    spliced = sum(end - start for start, end in exons)
    return utr5, utr5 + (spliced - utr5 - utr3) // 3 * 3


def spliced_to_local(exons: Sequence[Interval], offset: int) -> int:
    """The local coordinate of the base at spliced `offset` of exons in transcription order."""
    for start, end in exons:
        if offset < end - start:
            return start + offset
        offset -= end - start
    raise ValueError(f"spliced offset beyond the transcript's {sum(e - s for s, e in exons)} bp")


def place(local: Interval, gene_start: int, gene_end: int, strand: str) -> Interval:
    start, end = local
    return (gene_start + start, gene_start + end) if strand == "+" else (gene_end - end, gene_end - start)


@dataclass
class IdCounters:
    """Running numbers of transcripts and exons (ENST…, ENSE…) while genes are placed."""

    transcript: int
    exon: int


def place_gene(rng: np.random.Generator, gene_number: int, counters: IdCounters, name: str, chrom: str, strand: str,
               gene_type: str, start: int, exons: Sequence[Interval], transcripts: Sequence[LocalTranscript],
               principal: int) -> Gene:
    """A gene with its transcripts placed at `start` (exons in local coordinates from the transcription start);
    transcript versions, then the gene's version, drawn from `rng`."""
    end = start + exons[-1][1]
    exon_ids = [f"ENSE{counters.exon + i:011d}.1" for i in range(len(exons))]
    counters.exon += len(exons)
    placed = []
    for number, local in enumerate(transcripts):
        kept = [exons[i] for i in local.exon_indices]
        coding = None
        if local.coding is not None:
            first = spliced_to_local(kept, local.coding[0])
            last = spliced_to_local(kept, local.coding[1] - 1)
            coding = place((first, last + 1), start, end, strand)
        placed.append(Transcript(
            transcript_id=f"ENST{counters.transcript:011d}.{int(rng.integers(1, 5))}",
            name=f"{name}-{201 + number}",
            exons=tuple(place(exon, start, end, strand) for exon in kept),
            exon_ids=tuple(exon_ids[i] for i in local.exon_indices),
            coding=coding,
            protein_id=None if coding is None else f"ENSP{counters.transcript:011d}.1",
            tags=local.tags,
        ))
        counters.transcript += 1
    gene_id = f"ENSG{gene_number:011d}.{int(rng.integers(1, 8))}"
    return Gene(gene_id, name, chrom, strand, gene_type, start, end, tuple(placed), principal)


def _gene_model(rng: np.random.Generator, gene_type: str,
                long_last_exon: bool = False) -> tuple[list[Interval], list[LocalTranscript]]:
    """Local exons and transcripts of one gene; transcript 0 is the canonical (full-length) one."""
    if gene_type == "protein_coding":
        n_exons = max(coding_exon_count(rng), 2 if long_last_exon else 1)
        exons = gene_exons(rng, exon_lengths(rng, n_exons, long_last_exon))
        first, last = exons[0][1] - exons[0][0], exons[-1][1] - exons[-1][0]
        spliced = sum(end - start for start, end in exons)
        utr5 = int(min(first // 2, rng.integers(30, 300)))
        utr3 = int(min(last * rng.uniform(0.5, 0.95), spliced - utr5 - 3))
        transcripts = [LocalTranscript(tuple(range(len(exons))), coding_span(exons, utr5, utr3), CANONICAL_TAGS)]
        for indices in _skipping_isoforms(rng, len(exons), int(rng.poisson(2.3))):
            transcripts.append(LocalTranscript(indices, coding_span([exons[i] for i in indices], utr5, utr3),
                                               ("basic",)))
        return exons, transcripts
    if gene_type == "lncRNA":
        n_exons = 2 + int(rng.poisson(1.5))
        lengths = np.concatenate([lognormal_lengths(rng, FIRST_EXON, 1, EXON_BP),
                                  lognormal_lengths(rng, INTERNAL_EXON, n_exons - 2, EXON_BP),
                                  lognormal_lengths(rng, (800, 0.9), 1, EXON_BP)])
        exons = gene_exons(rng, lengths)
        transcripts = [LocalTranscript(tuple(range(n_exons)), None, ("basic", "Ensembl_canonical"))]
        transcripts += [LocalTranscript(indices, None, ("basic",))
                        for indices in _skipping_isoforms(rng, n_exons, int(rng.poisson(0.8)))]
        return exons, transcripts
    exons = gene_exons(rng, lognormal_lengths(rng, SHORT_NONCODING_EXON, 1, EXON_BP))
    return exons, [LocalTranscript((0,), None, ("basic", "Ensembl_canonical"))]


def _skipping_isoforms(rng: np.random.Generator, n_exons: int, wanted: int) -> list[tuple[int, ...]]:
    """Up to `wanted` distinct alternative transcripts, each skipping one or two internal exons."""
    internal = list(range(1, n_exons - 1))
    isoforms: list[tuple[int, ...]] = []
    for _ in range(wanted):
        if not internal:
            break
        skipped = set(rng.choice(internal, size=min(len(internal), int(rng.integers(1, 3))), replace=False).tolist())
        indices = tuple(i for i in range(n_exons) if i not in skipped)
        if indices not in isoforms:
            isoforms.append(indices)
    return isoforms


def centromere_run(chrom: str, length: int) -> Interval | None:
    """The centromere's N run: its hg38 span scaled to the contig's length."""
    if chrom not in HG38_CENTROMERES_MB:
        return None
    scale = length / HG38_CONTIGS[chrom]
    start_mb, end_mb = HG38_CENTROMERES_MB[chrom]
    return round(start_mb * 1e6 * scale), round(end_mb * 1e6 * scale)


def genome_n_runs(contigs: dict[str, int]) -> dict[str, tuple[Interval, ...]]:
    """Telomeres (10 kb, at most a twentieth of the contig) and centromeres; none on chrM."""
    runs = {}
    for chrom, length in contigs.items():
        if chrom not in HG38_CENTROMERES_MB:
            runs[chrom] = ()
            continue
        telomere = min(TELOMERE_N, length // 20)
        runs[chrom] = tuple(sorted([(0, telomere), centromere_run(chrom, length), (length - telomere, length)]))
    return runs


def build_layout(seed: int = 0, contigs: dict[str, int] | None = None,
                 gene_set: Sequence[GeneSetGene] = GENE_SET) -> Layout:
    """Genes placed between the N runs of each contig: the gene-set genes on their contigs (those whose contig is
    absent are left out), and background genes at GENCODE's density, scaled like the contig. Background genes that
    would not fit are left out; a gene-set gene that does not fit is an error."""
    contigs = dict(contigs or HG38_CONTIGS)
    rng = stream(seed, "layout")
    n_runs = genome_n_runs(contigs)
    types, shares = list(GENE_TYPES), np.array(list(GENE_TYPES.values()))
    genes: list[Gene] = []
    counters = IdCounters(GENE_ID_BASE, GENE_ID_BASE)
    background = 0
    for chrom, length in contigs.items():
        wanted = [(spec.name, "protein_coding", spec.long_last_exon) for spec in gene_set if spec.chrom == chrom]
        n_background = int(rng.poisson(GENCODE_GENES[chrom] * length / HG38_CONTIGS[chrom]))
        for gene_type in rng.choice(types, size=n_background, p=shares / shares.sum()).tolist():
            background += 1
            wanted.append((f"SYNG{background:05d}", gene_type, False))
        models = [(name, gene_type, *_gene_model(rng, gene_type, long_exon)) for name, gene_type, long_exon in wanted]
        strands = np.where(rng.random(len(models)) < 0.5, "+", "-")
        starts = _place_on_contig(rng, chrom, length, n_runs[chrom],
                                  [exons[-1][1] for _, _, exons, _ in models],
                                  n_required=sum(spec.chrom == chrom for spec in gene_set))
        order = sorted((start, index) for index, start in enumerate(starts) if start is not None)
        for start, index in order:
            name, gene_type, exons, transcripts = models[index]
            genes.append(place_gene(rng, GENE_ID_BASE + len(genes), counters, name, chrom, str(strands[index]),
                                    gene_type, start, exons, transcripts, principal=0))
    return Layout(contigs, tuple(genes), n_runs)


def _place_on_contig(rng: np.random.Generator, chrom: str, length: int, n_runs: Sequence[Interval],
                     spans: list[int], n_required: int) -> list[int | None]:
    """A start for each gene (None: left out) in the gaps between N runs, genes apart by at least MIN_INTERGENIC
    and the free space shared out at random; the first `n_required` genes must fit."""
    segments, cursor = [], 0
    for start, end in [*n_runs, (length, length)]:
        if start - cursor > 2 * MIN_INTERGENIC:
            segments.append((cursor + MIN_INTERGENIC, start - MIN_INTERGENIC))
        cursor = max(cursor, end)
    room = np.array([end - start for start, end in segments], dtype=np.int64)
    members: list[list[int]] = [[] for _ in segments]
    starts: list[int | None] = [None] * len(spans)
    for index, span in enumerate(spans):
        need = span + MIN_INTERGENIC
        fits = room >= need
        if not fits.any():
            if index < n_required:
                raise ValueError(f"{chrom} ({length:,} bp) has no room left for a {span:,} bp gene-set gene: "
                                 "use a larger contig scale")
            continue
        weights = np.where(fits, room, 0).astype(np.float64)
        segment = int(rng.choice(len(segments), p=weights / weights.sum()))
        room[segment] -= need
        members[segment].append(index)
    for (segment_start, _), free, indices in zip(segments, room, members):
        if not indices:
            continue
        order = rng.permutation(indices).tolist()
        # Free space shared out before, between and after the genes: each gap gets MIN_INTERGENIC plus its share.
        shares = np.floor(rng.dirichlet(np.ones(len(order) + 1)) * free).astype(np.int64).tolist()
        position = segment_start + shares[0]
        for index, share in zip(order, shares[1:]):
            starts[index] = position
            position += spans[index] + MIN_INTERGENIC + share
    return starts


# --- files ---------------------------------------------------------------------------------------------------------


@contextmanager
def replacing(path: Path, *index_suffixes: str) -> Iterator[Path]:
    """A temporary path beside `path`; on success it (and its index files) replace `path`, so an interrupted run
    never leaves a half-written file that a later run would take as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial.{path.name}")
    written = [(Path(f"{partial}{suffix}"), Path(f"{path}{suffix}")) for suffix in index_suffixes]
    try:
        yield partial
        # Indexes first: a data file present means its index is present too.
        for source, target in [*written, (partial, path)]:
            os.replace(source, target)
    finally:
        for source, _ in [*written, (partial, path)]:
            source.unlink(missing_ok=True)


def isochore_bases(rng: np.random.Generator, length: int, chunk_bp: int = _FASTA_CHUNK) -> Iterator[np.ndarray]:
    """Random bases (ASCII codes) in chunks, GC content drifting between blocks of mean GC_BLOCK_BP bases.

    Block ends and GC values are drawn first, then one uniform double per base, chunk after chunk: the bases do
    not depend on `chunk_bp`.
    """
    block_ends = np.cumsum(rng.geometric(1 / GC_BLOCK_BP, size=length // 10_000 + 1))
    block_gc = np.clip(rng.normal(GC_MEAN, GC_SD, size=block_ends.size), *GC_RANGE)
    for chunk_start in range(0, length, chunk_bp):
        chunk_end = min(length, chunk_start + chunk_bp)
        # Positions past the last drawn block stay in it.
        first, last = np.searchsorted(block_ends, [chunk_start, chunk_end - 1], side="right")
        first, last = min(first, block_ends.size - 1), min(last, block_ends.size - 1)
        bounds = np.concatenate([[chunk_start], np.minimum(block_ends[first:last], chunk_end), [chunk_end]])
        gc = np.repeat(block_gc[first : last + 1], np.diff(bounds))
        draw = rng.random(chunk_end - chunk_start)
        yield _BASES[(draw >= (1 - gc) / 2).astype(np.uint8) + (draw >= 0.5) + (draw >= 0.5 + gc / 2)]


def write_fasta(path: Path, records: Iterable[tuple[str, Iterable[np.ndarray]]], width: int = FASTA_WIDTH) -> None:
    """A FASTA of (name, chunks of ASCII codes) records, `width` bases a line, and its .fai (samtools format)."""
    newline = np.uint8(ord("\n"))
    index_lines, offset = [], 0
    with replacing(path, ".fai") as partial:
        with open(partial, "wb") as handle:
            for name, chunks in records:
                header = f">{name}\n".encode()
                handle.write(header)
                offset += len(header)
                start, length, carry = offset, 0, np.empty(0, np.uint8)
                for chunk in chunks:
                    bases = np.concatenate([carry, np.asarray(chunk, np.uint8)]) if carry.size else chunk
                    full = bases.size // width * width
                    lines = np.empty((full // width, width + 1), np.uint8)
                    lines[:, :width] = bases[:full].reshape(-1, width)
                    lines[:, width] = newline
                    handle.write(lines.tobytes())
                    carry = bases[full:].copy()
                    length += full
                    offset += lines.size
                if carry.size:
                    handle.write(carry.tobytes() + b"\n")
                    length += carry.size
                    offset += carry.size + 1
                index_lines.append(f"{name}\t{length}\t{start}\t{width}\t{width + 1}\n")
        Path(f"{partial}.fai").write_text("".join(index_lines))


def _gtf_attributes(pairs: list[tuple[str, object]]) -> str:
    # GENCODE quotes every value except exon_number and level.
    return " ".join(f"{key} {value};" if key in ("exon_number", "level") else f'{key} "{value}";'
                    for key, value in pairs)


def _transcript_lines(gene: Gene, transcript: Transcript) -> list[str]:
    chrom, strand = gene.chrom, gene.strand
    transcript_type = "protein_coding" if transcript.coding else gene.gene_type
    common = [
        ("gene_id", gene.gene_id), ("transcript_id", transcript.transcript_id), ("gene_type", gene.gene_type),
        ("gene_name", gene.name), ("transcript_type", transcript_type), ("transcript_name", transcript.name),
    ]
    tail = [("level", 2), *([("protein_id", transcript.protein_id)] if transcript.protein_id else []),
            *(("tag", tag) for tag in transcript.tags)]

    def line(feature: str, start: int, end: int, frame: str, pairs: list[tuple[str, object]]) -> str:
        columns = [chrom, "HAVANA", feature, str(start + 1), str(end), ".", strand, frame, _gtf_attributes(pairs)]
        return "\t".join(columns)

    span = (min(s for s, _ in transcript.exons), max(e for _, e in transcript.exons))
    lines = [line("transcript", *span, ".", common + tail)]
    utrs, coded = [], 0
    for number, ((start, end), exon_id) in enumerate(zip(transcript.exons, transcript.exon_ids), 1):
        exon_pairs = common + [("exon_number", number), ("exon_id", exon_id)] + tail
        lines.append(line("exon", start, end, ".", exon_pairs))
        if transcript.coding is None:
            continue
        cds_start, cds_end = max(start, transcript.coding[0]), min(end, transcript.coding[1])
        if cds_start < cds_end:
            lines.append(line("CDS", cds_start, cds_end, str((3 - coded % 3) % 3), exon_pairs))
            coded += cds_end - cds_start
        pieces = [(start, min(end, transcript.coding[0])), (max(start, transcript.coding[1]), end)]
        utrs += [line("UTR", s, e, ".", exon_pairs) for s, e in (pieces if strand == "+" else pieces[::-1]) if s < e]
    return lines + utrs  # GENCODE lists a transcript's UTR lines after its exons


def write_gtf(path: Path, genes: Iterable[Gene], header: Sequence[str], compresslevel: int = 9) -> int:
    """A gzipped GENCODE-format GTF of the genes (gene, transcript, exon, CDS and UTR lines); returns its lines."""
    n_lines = len(header)
    with replacing(path) as partial:
        # No file name and mtime 0 in the gzip header: the bytes depend on the content only.
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                       compresslevel=compresslevel) as handle:
            handle.write(("\n".join(header) + "\n").encode())
            for gene in genes:
                attributes = [("gene_id", gene.gene_id), ("gene_type", gene.gene_type), ("gene_name", gene.name),
                              ("level", 2)]
                lines = ["\t".join([gene.chrom, "HAVANA", "gene", str(gene.start + 1), str(gene.end), ".",
                                    gene.strand, ".", _gtf_attributes(attributes)])]
                for transcript in gene.transcripts:
                    lines += _transcript_lines(gene, transcript)
                handle.write(("\n".join(lines) + "\n").encode())
                n_lines += len(lines)
    return n_lines


def genotype_text(first: np.ndarray, second: np.ndarray, phased: np.ndarray | bool = True,
                  missing: np.ndarray | None = None) -> bytes:
    """The GT columns of one VCF record: `first|second` (or `/` where not phased, `./.` where missing), tab-separated,
    ending the line. Allele indices 0–9."""
    n = first.size
    if n and max(int(first.max()), int(second.max())) > 9:
        raise ValueError("genotype_text writes allele indices 0-9 only")
    text = np.empty((n, 4), np.uint8)
    text[:, 0] = first + ord("0")
    text[:, 1] = np.where(phased, ord("|"), ord("/"))
    text[:, 2] = second + ord("0")
    text[:, 3] = ord("\t")
    if missing is not None:
        text[missing, 0] = text[missing, 2] = ord(".")
        text[missing, 1] = ord("/")
    if n:
        text[-1, 3] = ord("\n")
    return text.tobytes()


class VcfWriter:
    """Writes the records of an open VCF (see `vcf_writer`)."""

    def __init__(self, handle: pysam.BGZFile):
        self._handle = handle

    def write(self, chrom: str, position: int, ref: str, alts: Sequence[str], genotypes: bytes, quality: str = ".",
              filters: str = "PASS", info: str = ".") -> None:
        """One record; `position` is 1-based, `genotypes` as `genotype_text` makes them."""
        fields = [chrom, str(position), ".", ref, ",".join(alts), quality, filters, info, "GT"]
        self._handle.write(("\t".join(fields) + "\t").encode() + genotypes)


@contextmanager
def vcf_writer(path: Path, header: Sequence[str], samples: Sequence[str],
               compresslevel: int | None = None) -> Iterator[VcfWriter]:
    """A bgzipped VCF (`header`: the ## lines) written record by record under a temporary name; when the block
    ends without error, tabix-indexed and renamed into place."""
    with replacing(path, ".tbi") as partial:
        with pysam.BGZFile(str(partial), "wb" if compresslevel is None else f"wb{compresslevel}") as handle:
            columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]
            handle.write(("\n".join([*header, "\t".join(columns)]) + "\n").encode())
            yield VcfWriter(handle)
        pysam.tabix_index(str(partial), preset="vcf", force=True, index=f"{partial}.tbi")


def write_tiny_checkpoint(folder: Path, sequences: Iterable[str], seed: int) -> None:
    """A DNABERT-2 checkpoint of CHECKPOINT_SHAPE with seeded random weights and a BPE tokenizer of VOCAB_SIZE
    trained on `sequences`. write_checkpoint writes the tokenizer files last, so a folder missing any of them is one
    an interrupted run left behind."""
    write_checkpoint(folder, train_bpe_tokenizer(sequences, vocab_size=VOCAB_SIZE), **CHECKPOINT_SHAPE, seed=seed)


# --- the cohort ----------------------------------------------------------------------------------------------------

SNV, DELETION, INSERTION = 0, 1, 2
# The coalescent: a constant-size population with human-like diversity (θ = 4·Ne·μ ≈ 1/kb) and recombination.
EFFECTIVE_POPULATION = 10_000
RECOMBINATION_RATE = 1e-8  # per bp per generation, the human average


@dataclass(frozen=True)
class Variant:
    """One biallelic site and which haplotypes carry its ALT allele (haplotypes 2i and 2i + 1 are subject i's)."""

    chrom: str
    start: int  # 0-based position of the first REF base
    kind: int  # SNV, DELETION or INSERTION
    size: int  # bases deleted or inserted (0 for an SNV)
    haplotypes: np.ndarray  # [2N] int8, 1 = ALT


def variant_kinds(rng: np.random.Generator, n: int, indel_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Kind and size of `n` sites: `indel_fraction` indels (half deletions, half insertions, 1–10 bp, geometric)."""
    indel = rng.random(n) < indel_fraction
    kind = np.where(indel, np.where(rng.random(n) < 0.5, DELETION, INSERTION), SNV).astype(np.int8)
    return kind, np.where(indel, np.minimum(rng.geometric(0.5, n), _MAX_INDEL), 0)


@dataclass(frozen=True)
class VariantSites:
    """Sites drawn independently of one another (`draw_sites`), sorted by contig (in the order given) and position."""

    chrom: np.ndarray  # str
    start: np.ndarray  # int64, 0-based position of the first REF base
    alt_copies: np.ndarray  # int64: ALT copies among the haplotypes
    kind: np.ndarray  # int8: SNV, DELETION or INSERTION
    size: np.ndarray  # int64: bases deleted or inserted (0 for an SNV)

    def __len__(self) -> int:
        return len(self.start)


def neutral_spectrum(n_haplotypes: int, exponent: float = 1.0) -> np.ndarray:
    """P(k) ∝ 1/k^exponent for k = 1 … n_haplotypes − 1 ALT copies (index k − 1)."""
    spectrum = np.arange(1, n_haplotypes, dtype=np.float64) ** -exponent
    return spectrum / spectrum.sum()


def site_rate(n_haplotypes: int, variants_per_kb: float, exponent: float = 1.0) -> float:
    """Sites per base at which a haplotype carries `variants_per_kb` ALT alleles per kb on average."""
    spectrum = neutral_spectrum(n_haplotypes, exponent)
    mean_copies = float((np.arange(1, n_haplotypes) * spectrum).sum())
    return variants_per_kb / 1000 * n_haplotypes / mean_copies


def draw_sites(rng: np.random.Generator, intervals: dict[str, list[Interval]], n_haplotypes: int,
               variants_per_kb: float = 1.0, sfs_exponent: float = 1.0, indel_fraction: float = 0.1) -> VariantSites:
    """Sites uniform over the bases of `intervals` (per contig, sorted, not overlapping), at most one per base, with
    ALT copy counts drawn from the neutral spectrum, each site on its own (no linkage); see `variant_kinds`."""
    rate = site_rate(n_haplotypes, variants_per_kb, sfs_exponent) if n_haplotypes > 1 else 0.0
    spectrum = neutral_spectrum(n_haplotypes, sfs_exponent) if n_haplotypes > 1 else np.ones(0)
    parts = []
    for chrom, spans in intervals.items():
        starts = np.array([start for start, _ in spans], dtype=np.int64)
        lengths = np.array([end - start for start, end in spans], dtype=np.int64)
        bases = int(lengths.sum())
        n = min(int(rng.poisson(rate * bases)), bases) if bases and rate else 0
        if n == 0:
            continue
        offsets = np.sort(rng.choice(bases, n, replace=False))
        cumulative = np.cumsum(lengths)
        which = np.searchsorted(cumulative, offsets, side="right")
        positions = starts[which] + offsets - (cumulative[which] - lengths[which])
        copies = rng.choice(n_haplotypes - 1, n, p=spectrum) + 1
        parts.append((np.full(n, chrom, dtype=object), positions, copies, *variant_kinds(rng, n, indel_fraction)))
    if not parts:
        return VariantSites(np.empty(0, object), *(np.empty(0, np.int64) for _ in range(2)), np.empty(0, np.int8),
                            np.empty(0, np.int64))
    return VariantSites(*(np.concatenate(column) for column in zip(*parts)))


def independent_variants(rng: np.random.Generator, sites: VariantSites, n_haplotypes: int) -> Iterator[Variant]:
    """Each site's ALT copies on haplotypes drawn at random, independently of the other sites."""
    for index in range(len(sites)):
        haplotypes = np.zeros(n_haplotypes, np.int8)
        haplotypes[rng.choice(n_haplotypes, int(sites.alt_copies[index]), replace=False)] = 1
        yield Variant(sites.chrom[index], int(sites.start[index]), int(sites.kind[index]), int(sites.size[index]),
                      haplotypes)


def coalescent_variants(seed: int, genes: Sequence[Gene], n_subjects: int, variants_per_kb: float = 1.0,
                        indel_fraction: float = 0.1) -> Iterator[Variant]:
    """Variants in the exons (of every transcript) of `genes` (in genomic order), from one neutral coalescent with
    recombination (msprime): the genes laid end to end, mutations only in exons, at the rate at which a haplotype
    carries `variants_per_kb` ALT alleles per kb of exon on average. Allele counts follow P(k) ∝ 1/k in expectation,
    and nearby sites are in linkage disequilibrium as in a real population. Sites left monomorphic by a back
    mutation are dropped."""
    import msprime  # only the cohort benchmark simulates genealogies (and msprime takes a second to import)

    rng = stream(seed, f"coalescent:{n_subjects}:{variants_per_kb}:{indel_fraction}")
    offsets = np.concatenate([[0], np.cumsum([gene.end - gene.start for gene in genes])])
    exons = [(offsets[i] + start - gene.start, offsets[i] + end - gene.start)
             for i, gene in enumerate(genes) for start, end in _merged(e for t in gene.transcripts for e in t.exons)]
    if not exons:
        return
    bounds = sorted({0, int(offsets[-1]), *(int(b) for exon in exons for b in exon)})
    exonic = np.zeros(len(bounds) - 1, dtype=bool)
    exonic[np.searchsorted(bounds, [start for start, _ in exons])] = True
    mutation_rate = variants_per_kb / 1000 / (4 * EFFECTIVE_POPULATION)
    ancestry = msprime.sim_ancestry(samples=n_subjects, population_size=EFFECTIVE_POPULATION,
                                    recombination_rate=RECOMBINATION_RATE, sequence_length=int(offsets[-1]),
                                    random_seed=int(rng.integers(1, 2**31)))
    mutated = msprime.sim_mutations(ancestry, rate=msprime.RateMap(position=bounds, rate=exonic * mutation_rate),
                                    random_seed=int(rng.integers(1, 2**31)), discrete_genome=True,
                                    model=msprime.BinaryMutationModel())
    kinds, sizes = variant_kinds(rng, mutated.num_sites, indel_fraction)
    n_haplotypes = 2 * n_subjects
    for variant, kind, size in zip(mutated.variants(), kinds.tolist(), sizes.tolist()):
        carried = int(variant.genotypes.sum())
        if carried in (0, n_haplotypes):
            continue
        position = int(variant.site.position)
        index = int(np.searchsorted(offsets, position, side="right")) - 1
        yield Variant(genes[index].chrom, genes[index].start + position - int(offsets[index]), kind, size,
                      variant.genotypes.astype(np.int8))


def _merged(spans: Iterable[Interval]) -> list[Interval]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def variant_alleles(rng: np.random.Generator, variant: Variant,
                    reference: Callable[[str, int, int], str]) -> tuple[str, str] | None:
    """REF (read with `reference(chrom, start, end)`) and ALT of one site; None where the REF would hold a base
    other than A/C/G/T or run past the contig."""
    deleted = variant.size if variant.kind == DELETION else 0
    ref = reference(variant.chrom, variant.start, variant.start + 1 + deleted).upper()
    if len(ref) != 1 + deleted or set(ref) - set("ACGT"):
        return None
    if variant.kind == DELETION:
        return ref, ref[0]
    if variant.kind == INSERTION:
        return ref, ref + _BASES[rng.integers(0, 4, variant.size)].tobytes().decode()
    return ref, "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]


@dataclass(frozen=True)
class WrittenSites:
    """The records a VCF got (a site whose REF is not all A/C/G/T is left out): their kind and the ALT copies each
    carries (on chrX fewer than drawn: males carry one haplotype)."""

    kind: np.ndarray  # int8
    alt_copies: np.ndarray  # int64


def write_cohort_vcf(path: Path, variants: Iterable[Variant], reference: Callable[[str, int, int], str],
                     samples: Sequence[str], contigs: dict[str, int], rng: np.random.Generator,
                     males: np.ndarray | None = None, compresslevel: int | None = None,
                     header: Sequence[str] = ()) -> WrittenSites:
    """A phased VCF of the variants (sorted by contig and position). Males (on chrX) carry their first haplotype on
    both, written as a homozygous call as joint-called exomes do."""
    lines = ["##fileformat=VCFv4.2", *header, *(f"##contig=<ID={chrom},length={length}>"
                                                for chrom, length in contigs.items()),
             '##FILTER=<ID=PASS,Description="All filters passed">',
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    kinds, copies = [], []
    with vcf_writer(path, lines, samples, compresslevel) as vcf:
        for variant in variants:
            alleles = variant_alleles(rng, variant, reference)
            if alleles is None:
                continue
            haplotypes = variant.haplotypes.reshape(-1, 2).copy()
            if males is not None and variant.chrom == "chrX":
                haplotypes[males, 1] = haplotypes[males, 0]
            vcf.write(variant.chrom, variant.start + 1, alleles[0], [alleles[1]],
                      genotype_text(haplotypes[:, 0], haplotypes[:, 1]))
            kinds.append(variant.kind)
            copies.append(int(haplotypes.sum()))
    return WrittenSites(np.array(kinds, dtype=np.int8), np.array(copies, dtype=np.int64))


def subject_ids(n: int) -> list[str]:
    return [f"SUBJ{i:07d}" for i in range(1, n + 1)]


def draw_males(seed: int, n: int) -> np.ndarray:
    return stream(seed, f"sex:{n}").random(n) < MALE_SHARE


def write_covariates(path: Path, samples: Sequence[str], males: np.ndarray, seed: int) -> None:
    """subject_id, age, sex, pc1..pc10, batch, site, label: assessment centres shift age and the ancestry PCs,
    genotyping batches follow recruitment (a few centres each) and leave a trace in pc4, the label depends on age
    and sex."""
    rng = stream(seed, f"covariates:{len(samples)}")
    n = len(samples)
    site = rng.choice(N_SITES, n, p=rng.dirichlet(np.full(N_SITES, 5.0)))
    batch = np.where(rng.random(n) < 0.8, (site * N_BATCHES // N_SITES + rng.integers(0, 2, n)) % N_BATCHES,
                     rng.integers(0, N_BATCHES, n))
    age = np.round(np.clip(rng.normal(57 + rng.normal(0, 2, N_SITES)[site], 8), 40, 70), 1)
    pcs = rng.normal(0, 0.02 / np.sqrt(np.arange(1, 11)), (n, 10))
    pcs[:, :3] += rng.normal(0, 0.01, (N_SITES, 3))[site]
    pcs[:, 3] += 0.002 * (batch - N_BATCHES / 2) / N_BATCHES
    risk = -0.5 + 0.05 * (age - 57) + 0.3 * males
    frame = pd.DataFrame({"subject_id": samples, "age": age, "sex": np.where(males, "M", "F")})
    for i in range(10):
        frame[f"pc{i + 1}"] = np.round(pcs[:, i], 6)
    frame["batch"] = [f"batch{b + 1:02d}" for b in batch]
    frame["site"] = [f"centre{s + 1:02d}" for s in site]
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(np.int8)
    with replacing(path) as partial:
        frame.to_csv(partial, sep="\t", index=False)


# --- everything ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortInputs:
    """The files of one synthetic cohort, what was drawn, and how long each file written now took."""

    fasta: Path
    gtf: Path
    gene_set: Path
    checkpoint: Path
    vcf: Path
    covariates: Path
    contigs: dict[str, int]
    gene_set_genes: list[str]
    gene_set_contigs: list[str]  # the contigs holding gene-set genes, in contig order
    n_subjects: int
    seconds: dict[str, float] = field(default_factory=dict)  # input name → seconds (absent: already there)

    def sizes(self) -> dict[str, int]:
        """Bytes on disk per input (indexes included; the checkpoint folder in all)."""
        def size(path: Path) -> int:
            if path.is_dir():
                return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*") if p.is_file())

        return {name: size(getattr(self, name)) for name in ("fasta", "gtf", "gene_set", "checkpoint", "vcf",
                                                             "covariates")}


GTF_HEADER = (
    "##description: evidence-based annotation of the human genome (GRCh38), version 0 (synthetic) - "
    "kb_assets synthetic annotation",
    "##provider: GENCODE",
    "##contact: none (generated by kb_assets.benchmarks.synthetic)",
    "##format: gtf",
    "##date: 2026-01-01",
)


def write_gene_set(path: Path, names: Sequence[str]) -> None:
    with replacing(path) as partial:
        partial.write_text("# Synthetic gene set (kb_assets.benchmarks.synthetic.GENE_SET), in concatenation order.\n"
                           "gene\n" + "".join(f"{name}\n" for name in names))


def _fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def generate_cohort_inputs(
    workdir: str | os.PathLike,
    n_subjects: int,
    *,
    seed: int = 0,
    contigs: dict[str, int] | None = None,
    gene_set: Sequence[GeneSetGene] = GENE_SET,
    variants_per_kb: float = 1.0,
    indel_fraction: float = 0.1,
    vcf_compresslevel: int = 1,
    force: bool = False,
) -> CohortInputs:
    """Write (or reuse) every input of a synthetic cohort under `workdir`.

    The reference (FASTA, GTF, gene set, checkpoint) goes to `reference-<seed, contigs, gene set>/`, shared by
    cohorts of every size; the VCF and covariates to `cohort-<subjects, variant settings>/` inside it. A file that
    exists is reused unless `force` (every file is written under a temporary name and renamed).
    """
    contigs = dict(contigs or HG38_CONTIGS)
    layout = build_layout(seed, contigs, gene_set)
    # Named by what decides the files: a change to how genes or bases are drawn makes a new folder, never a GTF that
    # disagrees with a reused FASTA or VCF.
    layout_digest = hashlib.sha256(repr((layout.genes, layout.n_runs)).encode()).hexdigest()
    reference_tag = _fingerprint([GENERATOR_VERSION, seed, contigs, layout_digest])
    reference_dir = Path(workdir) / f"reference-s{seed}-{reference_tag}"
    cohort_dir = reference_dir / f"cohort-n{n_subjects}-v{variants_per_kb:g}-i{indel_fraction:g}"
    names = [spec.name for spec in gene_set if spec.chrom in contigs]
    paths = {
        "fasta": reference_dir / "genome.fa", "gtf": reference_dir / "annotation.gencode.gtf.gz",
        "gene_set": reference_dir / "gene_set.tsv", "checkpoint": reference_dir / "checkpoint",
        "vcf": cohort_dir / "cohort.vcf.gz", "covariates": cohort_dir / "covariates.tsv",
    }
    samples = subject_ids(n_subjects)
    males = draw_males(seed, n_subjects)

    def genome_records() -> Iterator[tuple[str, Iterator[np.ndarray]]]:
        for chrom, length in contigs.items():
            yield chrom, _contig_chunks(stream(seed, f"genome:{chrom}"), length, layout.n_runs[chrom])

    def with_reference(write: Callable[[pysam.FastaFile], None]) -> Callable[[], None]:
        def run() -> None:
            with pysam.FastaFile(str(paths["fasta"])) as fasta:
                write(fasta)
        return run

    def write_checkpoint_from(fasta: pysam.FastaFile) -> None:
        if paths["checkpoint"].exists():
            shutil.rmtree(paths["checkpoint"])
        write_tiny_checkpoint(paths["checkpoint"], _training_slices(fasta, layout), seed)

    def write_vcf_from(fasta: pysam.FastaFile) -> None:
        genes = [gene for gene in layout.genes if gene.name in set(names)]
        variants = coalescent_variants(seed, genes, n_subjects, variants_per_kb, indel_fraction)
        write_cohort_vcf(paths["vcf"], variants, fasta.fetch, samples, contigs,
                         stream(seed, f"alleles:{n_subjects}"), males, vcf_compresslevel,
                         header=["##source=kb_assets.benchmarks.synthetic", f"##reference={paths['fasta'].name}"])

    plan: dict[str, tuple[list[Path], Callable[[], None]]] = {
        "fasta": ([paths["fasta"], Path(f"{paths['fasta']}.fai")],
                  lambda: write_fasta(paths["fasta"], genome_records())),
        "gtf": ([paths["gtf"]], lambda: write_gtf(paths["gtf"], layout.genes, GTF_HEADER, compresslevel=6)),
        "gene_set": ([paths["gene_set"]], lambda: write_gene_set(paths["gene_set"], names)),
        "checkpoint": ([paths["checkpoint"] / name for name in CHECKPOINT_FILES],
                       with_reference(write_checkpoint_from)),
        "vcf": ([paths["vcf"], Path(f"{paths['vcf']}.tbi")], with_reference(write_vcf_from)),
        "covariates": ([paths["covariates"]], lambda: write_covariates(paths["covariates"], samples, males, seed)),
    }
    seconds = {}
    for name, (files, write) in plan.items():
        if force or not all(path.exists() for path in files):
            started = time.perf_counter()
            write()
            seconds[name] = time.perf_counter() - started
    held = {spec.chrom for spec in gene_set}
    return CohortInputs(**paths, contigs=contigs, gene_set_genes=names,
                        gene_set_contigs=[chrom for chrom in contigs if chrom in held], n_subjects=n_subjects,
                        seconds=seconds)


def _contig_chunks(rng: np.random.Generator, length: int, n_runs: Sequence[Interval]) -> Iterator[np.ndarray]:
    position = 0
    for chunk in isochore_bases(rng, length):
        end = position + chunk.size
        for start, stop in n_runs:
            if start < end and stop > position:
                chunk[max(start, position) - position : min(stop, end) - position] = ord("N")
        yield chunk
        position = end


def _training_slices(fasta: pysam.FastaFile, layout: Layout) -> Iterator[str]:
    """TOKENIZER_TRAINING_BP of sequence, read from the start of the contigs (past the telomere) in order."""
    left = TOKENIZER_TRAINING_BP
    for chrom, length in layout.contigs.items():
        if left <= 0:
            break
        start = min(TELOMERE_N, length // 20)
        end = min(length, start + left)
        yield fasta.fetch(chrom, start, end)
        left -= end - start
