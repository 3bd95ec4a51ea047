"""Deterministic demo inputs: a synthetic genome, its GENCODE-style annotation, an ordered gene set, a cohort VCF,
a covariates table and a tiny DNABERT-2 checkpoint, written where a recipe's `inputs` say.

Plain Python (no Dagster): `kb-assets demo init` calls `generate_demo_inputs`. Every random choice comes from a
numpy Generator seeded from DEMO_SEED and every compressed file has a fixed header, so two runs write
byte-identical files. `GENES` below is the one source of truth for the annotation; `GENE_SET` lists the
committed manifest data/gene_sets/demo_gene_set.tsv, which the generator rewrites identically.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pysam

from kb_assets.encoders.checkpoint import BIN_WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_CONFIG_FILE
from kb_assets.encoders.checkpoint import write_checkpoint as write_model_checkpoint
from kb_assets.encoders.tokenizer import TOKENIZER_FILE, train_bpe_tokenizer
from kb_assets.settings import Recipe

DEMO_SEED = 20240601
CHROMOSOMES = {"chr1": 1_000_000, "chr2": 800_000, "chrX": 400_000}
ASSEMBLY = "demo-hg38-like"
# Dates written into file headers: fixed, so the files do not change from day to day.
RELEASE_DATE = "2024-06-01"

# Tiny DNABERT-2 shape: the demo's embeddings take about a minute on 2 CPU cores.
CHECKPOINT_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
VOCAB_SIZE = 4096

N_VCF_SUBJECTS = 220
# Covariates leave out two VCF subjects and add two subjects without genotypes, so the cohort/covariate
# intersection has something to report.
N_COVARIATES_ONLY = 2
N_GENOTYPES_ONLY = 2
SITES = ("site_A", "site_B", "site_C", "site_D", "site_E", "site_F")
BATCHES = ("batch1", "batch2", "batch3")

# Each kind of gene structure exercises one rule of region extraction or transcript choice:
# standard     1–2 transcripts, the longest tagged Ensembl_canonical + MANE_Select
# alternative  2–4 transcripts; the tagged one skips an exon, so it is NOT the longest
# mane_only    the shorter of two transcripts tagged MANE_Select, none tagged Ensembl_canonical
# untagged     no canonical tags: the longest-CDS rule decides (the longest transcript has the shorter CDS)
# single_exon  one transcript of one exon
# long_exon    last exon 3.5–6 kb: longer than one 512-token window
# lncrna       non-coding: exons and no CDS
GeneKind = Literal["standard", "alternative", "mane_only", "untagged", "single_exon", "long_exon", "lncrna"]


@dataclass(frozen=True)
class GeneSpec:
    """One row of the gene table: what the generator builds; positions and structure are drawn from the seed."""

    name: str
    chrom: str
    strand: Literal["+", "-"]
    kind: GeneKind


# The gene table, in genomic order per chromosome. Gene ids follow table order from ENSG00000900001: far above
# real Ensembl ids, so demo ids can never be mistaken for real genes.
GENES: tuple[GeneSpec, ...] = (
    GeneSpec("GRIN2A_demo", "chr1", "+", "alternative"),
    GeneSpec("LINC00473_demo", "chr1", "-", "lncrna"),
    GeneSpec("GRIN2B_demo", "chr1", "-", "standard"),
    GeneSpec("GRIA1_demo", "chr1", "+", "single_exon"),
    GeneSpec("DLG4_demo", "chr1", "+", "standard"),
    GeneSpec("GABRA1_demo", "chr1", "-", "untagged"),
    GeneSpec("SHANK3_demo", "chr1", "-", "alternative"),
    GeneSpec("CAMK2A_demo", "chr1", "+", "single_exon"),
    GeneSpec("NRXN1_demo", "chr1", "-", "long_exon"),
    GeneSpec("GRIA2_demo", "chr1", "+", "standard"),
    GeneSpec("NLGN1_demo", "chr1", "+", "mane_only"),
    GeneSpec("GABRB2_demo", "chr1", "-", "standard"),
    GeneSpec("SYNGAP1_demo", "chr1", "+", "long_exon"),
    GeneSpec("BDNF_demo", "chr1", "-", "untagged"),
    GeneSpec("NTRK2_demo", "chr1", "+", "standard"),
    GeneSpec("MAPT_demo", "chr1", "+", "alternative"),
    GeneSpec("APP_demo", "chr1", "-", "standard"),
    GeneSpec("SNCA_demo", "chr1", "-", "single_exon"),
    GeneSpec("CACNA1C_demo", "chr1", "+", "standard"),
    GeneSpec("GRM5_demo", "chr1", "-", "standard"),
    GeneSpec("SCN1A_demo", "chr2", "-", "standard"),
    GeneSpec("SCN2A_demo", "chr2", "+", "alternative"),
    GeneSpec("MIAT_demo", "chr2", "+", "lncrna"),
    GeneSpec("KCNQ2_demo", "chr2", "-", "single_exon"),
    GeneSpec("CNTNAP2_demo", "chr2", "+", "long_exon"),
    GeneSpec("FOXP2_demo", "chr2", "+", "untagged"),
    GeneSpec("TCF4_demo", "chr2", "-", "single_exon"),
    GeneSpec("CHD8_demo", "chr2", "-", "standard"),
    GeneSpec("ANK3_demo", "chr2", "+", "mane_only"),
    GeneSpec("ADNP_demo", "chr2", "-", "standard"),
    GeneSpec("DYRK1A_demo", "chr2", "+", "alternative"),
    GeneSpec("RELN_demo", "chr2", "-", "long_exon"),
    GeneSpec("DISC1_demo", "chr2", "+", "standard"),
    GeneSpec("NRG1_demo", "chr2", "-", "untagged"),
    GeneSpec("GAD1_demo", "chr2", "+", "standard"),
    GeneSpec("MECP2_demo", "chrX", "-", "mane_only"),
    GeneSpec("FMR1_demo", "chrX", "-", "long_exon"),
    GeneSpec("NLGN3_demo", "chrX", "+", "standard"),
    GeneSpec("XIST_demo", "chrX", "-", "lncrna"),
    GeneSpec("NLGN4X_demo", "chrX", "+", "alternative"),
    GeneSpec("DLG3_demo", "chrX", "+", "single_exon"),
    GeneSpec("SYP_demo", "chrX", "-", "standard"),
    GeneSpec("OPHN1_demo", "chrX", "-", "untagged"),
    GeneSpec("SYN1_demo", "chrX", "+", "standard"),
)
GENE_ID_BASE = 900_001

# The demo gene set in manifest order (deliberately not genomic order); entries in GENE_SET_BY_ID are written as
# their versionless Ensembl id instead of their symbol.
GENE_SET = (
    "SCN2A_demo", "MECP2_demo", "GRIN2A_demo", "CAMK2A_demo", "FOXP2_demo", "XIST_demo", "SHANK3_demo",
    "FMR1_demo", "TCF4_demo", "DLG4_demo", "CNTNAP2_demo", "NLGN4X_demo", "BDNF_demo", "CHD8_demo", "SYNGAP1_demo",
)
GENE_SET_BY_ID = frozenset({"CAMK2A_demo"})
GENE_SET_HEADER = (
    "# The kb_assets demo gene set, written by `kb-assets demo init` from the gene table in kb_assets/demo.py.\n"
    "# One gene per line, in the order the gene vectors are concatenated (deliberately not genomic order):\n"
    "# a symbol, or an Ensembl gene id with or without its version.\n"
)

# N runs (besides the 10 kb at each chromosome end and one assembly gap): a short one inside an exon of a gene-set
# gene (well under max_n_fraction of its exons, so the N-share check has something to count), one inside an
# intron and one in a promoter flank.
TELOMERE_N = 10_000
ASSEMBLY_GAP_N = 20_000
EXON_N_GENE, EXON_N = "DLG4_demo", 20
INTRON_N_GENE, INTRON_N = "SHANK3_demo", 100
FLANK_N_GENE, FLANK_N = "FOXP2_demo", 200
FLANK_N_UPSTREAM = 1_000  # bp between the flank N run and the gene's transcription start
MIN_INTERGENIC = 3_000

# Variants with a special role, placed before all others.
MULTIALLELIC_GENE = "SCN2A_demo"
EDGE_DELETION_GENE = "CHD8_demo"
N_LOWQUAL = 5

_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMPLEMENT = np.zeros(256, dtype=np.uint8)
_COMPLEMENT[_BASES] = np.frombuffer(b"TGCA", dtype=np.uint8)
_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}
_FASTA_WIDTH = 60
_CANONICAL_TAGS = ("basic", "Ensembl_canonical", "MANE_Select")

Interval = tuple[int, int]  # 0-based half-open


# --- the gene models -----------------------------------------------------------------------------------------------


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

    spec: GeneSpec
    gene_id: str
    start: int
    end: int
    transcripts: tuple[Transcript, ...]
    principal: int

    @property
    def gene_id_base(self) -> str:
        return self.gene_id.split(".")[0]

    @property
    def gene_type(self) -> str:
        return "lncRNA" if self.spec.kind == "lncrna" else "protein_coding"

    @property
    def principal_transcript(self) -> Transcript:
        return self.transcripts[self.principal]


def _named(genes: Sequence[Gene], name: str) -> Gene:
    return next(gene for gene in genes if gene.spec.name == name)


def _on(genes: Sequence[Gene], chrom: str) -> list[Gene]:
    return [gene for gene in genes if gene.spec.chrom == chrom]


@dataclass(frozen=True)
class Layout:
    """Genes and N runs (sorted, per chromosome) of the demo genome."""

    genes: tuple[Gene, ...]
    n_runs: dict[str, tuple[Interval, ...]]

    def gene(self, name: str) -> Gene:
        return _named(self.genes, name)

    def on(self, chrom: str) -> list[Gene]:
        return _on(self.genes, chrom)


@dataclass(frozen=True)
class _LocalTranscript:
    """A transcript before placement: indices into its gene's exons and its CDS in spliced coordinates."""

    exon_indices: tuple[int, ...]
    coding: Interval | None
    tags: tuple[str, ...]


def _rng(stream: str) -> np.random.Generator:
    # One independent stream per input: changing how one input is drawn leaves the others unchanged.
    return np.random.default_rng([DEMO_SEED, *stream.encode()])


def _local_exons(rng: np.random.Generator, kind: GeneKind) -> list[Interval]:
    """Exons as distances from the transcription start, in transcription order."""
    if kind == "single_exon":
        return [(0, int(rng.integers(900, 2600)))]
    low, high = {"lncrna": (2, 5), "long_exon": (2, 8), "standard": (3, 11)}.get(kind, (5, 11))
    n = int(rng.integers(low, high))
    lengths = [int(rng.integers(150, 400))]
    lengths += np.clip(rng.lognormal(np.log(130), 0.35, n - 2), 60, 400).astype(int).tolist()
    lengths.append(int(rng.integers(3_500, 6_000)) if kind == "long_exon" else int(rng.integers(400, 1_500)))
    introns = np.clip(rng.lognormal(np.log(1_500), 0.8, n - 1), 250, 9_000).astype(int).tolist()
    exons, position = [], 0
    for length, intron in zip(lengths, [*introns, 0]):
        exons.append((position, position + length))
        position += length + intron
    return exons


def _coding_span(exons: Sequence[Interval], utr5: int, utr3: int) -> Interval:
    """The CDS in spliced coordinates: between the UTRs, a whole number of codons."""
    spliced = sum(end - start for start, end in exons)
    return utr5, utr5 + (spliced - utr5 - utr3) // 3 * 3


def _local_transcripts(
    rng: np.random.Generator, kind: GeneKind, exons: list[Interval]
) -> tuple[list[_LocalTranscript], int]:
    """The gene's transcripts (as exon subsets) and the index of the one the choice rule should pick."""
    n = len(exons)
    everything = tuple(range(n))
    internal = list(range(1, n - 1))

    def skipping(*skipped: int) -> tuple[int, ...]:
        return tuple(i for i in everything if i not in skipped)

    # Isoforms share the first and last exon, hence the UTRs: a skipped exon shortens the CDS as well.
    utr5 = int(rng.integers(40, max(41, min(250, (exons[0][1] - exons[0][0]) // 2))))
    utr3 = int(rng.integers(80, max(81, min(800, (exons[-1][1] - exons[-1][0]) // 2))))

    def coding(indices: tuple[int, ...], utr3_bp: int = utr3) -> Interval:
        return _coding_span([exons[i] for i in indices], utr5, utr3_bp)

    if kind == "lncrna":
        transcripts = [_LocalTranscript(everything, None, ("basic", "Ensembl_canonical"))]
        if internal and rng.random() < 0.5:
            transcripts.append(_LocalTranscript(skipping(int(rng.choice(internal))), None, ("basic",)))
        return transcripts, 0
    if kind in ("standard", "single_exon", "long_exon"):
        transcripts = [_LocalTranscript(everything, coding(everything), _CANONICAL_TAGS)]
        if kind == "standard" and len(internal) >= 2 and rng.random() < 0.5:
            alternative = skipping(int(rng.choice(internal)))
            transcripts.append(_LocalTranscript(alternative, coding(alternative), ("basic",)))
        return transcripts, 0
    skipped = int(rng.choice(internal))
    shorter = skipping(skipped)
    if kind == "alternative":
        transcripts = [
            _LocalTranscript(everything, coding(everything), ("basic",)),
            _LocalTranscript(shorter, coding(shorter), _CANONICAL_TAGS),
        ]
        others = [i for i in internal if i != skipped]
        for _ in range(int(rng.integers(0, 3))):
            extra = skipping(*rng.choice(others, size=2, replace=False).tolist())
            if extra not in [t.exon_indices for t in transcripts]:
                transcripts.append(_LocalTranscript(extra, coding(extra), ("basic",)))
        return transcripts, 1
    if kind == "mane_only":
        return [
            _LocalTranscript(everything, coding(everything), ("basic",)),
            _LocalTranscript(shorter, coding(shorter), ("basic", "MANE_Select")),
        ], 1
    # untagged: the full-length transcript ends its CDS early (a long 3' UTR), so the shorter one has the longer CDS.
    full_length = sum(end - start for start, end in exons)
    transcripts = [
        _LocalTranscript(everything, coding(everything, full_length * 2 // 3), ("basic",)),
        _LocalTranscript(shorter, coding(shorter, 80), ("basic",)),
    ]
    cds_lengths = [t.coding[1] - t.coding[0] for t in transcripts]
    return transcripts, int(np.argmax(cds_lengths))


def _spliced_to_local(exons: Sequence[Interval], offset: int) -> int:
    """The local coordinate of the base at spliced `offset` of exons in transcription order."""
    for start, end in exons:
        if offset < end - start:
            return start + offset
        offset -= end - start
    raise ValueError(f"spliced offset beyond the transcript's {sum(e - s for s, e in exons)} bp")


def _place(local: Interval, gene_start: int, gene_end: int, strand: str) -> Interval:
    start, end = local
    return (gene_start + start, gene_start + end) if strand == "+" else (gene_end - end, gene_end - start)


def build_layout() -> Layout:
    """Every gene of GENES with its transcripts, placed on the chromosomes, and the N runs between them."""
    rng = _rng("genes")
    models = []
    for spec in GENES:
        exons = _local_exons(rng, spec.kind)
        transcripts, principal = _local_transcripts(rng, spec.kind, exons)
        models.append((spec, exons, transcripts, principal))

    genes: list[Gene] = []
    transcript_number = exon_number = GENE_ID_BASE
    for chrom, chrom_length in CHROMOSOMES.items():
        on_chrom = [(index, model) for index, model in enumerate(models) if model[0].chrom == chrom]
        lengths = np.array([model[1][-1][1] for _, model in on_chrom])
        # Intergenic gaps: a minimum plus a random share of the free space, flanked by the telomeric N runs.
        free = chrom_length - 2 * TELOMERE_N - lengths.sum() - (len(on_chrom) + 1) * MIN_INTERGENIC
        if free < 0:
            raise ValueError(f"the genes of {chrom} need {-free} bp more than CHROMOSOMES gives it")
        gaps = MIN_INTERGENIC + np.floor(rng.dirichlet(np.ones(len(on_chrom) + 1)) * free).astype(int)
        starts = TELOMERE_N + np.cumsum(gaps[:-1]) + np.concatenate([[0], np.cumsum(lengths[:-1])])
        for (index, (spec, exons, local_transcripts, principal)), start, length in zip(on_chrom, starts, lengths):
            start, end = int(start), int(start + length)
            exon_ids = [f"ENSE{exon_number + i:011d}.1" for i in range(len(exons))]
            exon_number += len(exons)
            transcripts = []
            for number, local in enumerate(local_transcripts):
                kept = [exons[i] for i in local.exon_indices]
                coding = None
                if local.coding is not None:
                    first = _spliced_to_local(kept, local.coding[0])
                    last = _spliced_to_local(kept, local.coding[1] - 1)
                    coding = _place((first, last + 1), start, end, spec.strand)
                transcripts.append(Transcript(
                    transcript_id=f"ENST{transcript_number:011d}.{int(rng.integers(1, 5))}",
                    name=f"{spec.name}-{201 + number}",
                    exons=tuple(_place(exon, start, end, spec.strand) for exon in kept),
                    exon_ids=tuple(exon_ids[i] for i in local.exon_indices),
                    coding=coding,
                    protein_id=None if coding is None else f"ENSP{transcript_number:011d}.1",
                    tags=local.tags,
                ))
                transcript_number += 1
            gene_id = f"ENSG{GENE_ID_BASE + index:011d}.{int(rng.integers(1, 8))}"
            genes.append(Gene(spec, gene_id, start, end, tuple(transcripts), principal))
    return Layout(tuple(genes), _n_runs(genes))


def _n_runs(genes: list[Gene]) -> dict[str, tuple[Interval, ...]]:
    """10 kb at both ends of each chromosome, an assembly gap in chr1's widest intergenic gap, and the short runs
    in an exon, an intron and a promoter flank."""
    runs = {chrom: [(0, TELOMERE_N), (length - TELOMERE_N, length)] for chrom, length in CHROMOSOMES.items()}

    chr1 = _on(genes, "chr1")
    before, after = max(zip(chr1, chr1[1:]), key=lambda pair: pair[1].start - pair[0].end)
    middle, gap = (before.end + after.start) // 2, min(ASSEMBLY_GAP_N, (after.start - before.end) // 2)
    runs["chr1"].append((middle - gap // 2, middle + gap // 2))

    exon_gene = _named(genes, EXON_N_GENE)
    start, end = max(exon_gene.principal_transcript.exons, key=lambda exon: exon[1] - exon[0])
    runs[exon_gene.spec.chrom].append(((start + end) // 2, (start + end) // 2 + EXON_N))

    intron_gene = _named(genes, INTRON_N_GENE)
    exons = sorted(exon for transcript in intron_gene.transcripts for exon in transcript.exons)
    start, end = max(((a[1], b[0]) for a, b in zip(exons, exons[1:])), key=lambda intron: intron[1] - intron[0])
    runs[intron_gene.spec.chrom].append(((start + end) // 2, (start + end) // 2 + INTRON_N))

    flank_gene = _named(genes, FLANK_N_GENE)
    if flank_gene.spec.strand == "+":
        end = flank_gene.start - FLANK_N_UPSTREAM
        runs[flank_gene.spec.chrom].append((end - FLANK_N, end))
    else:
        start = flank_gene.end + FLANK_N_UPSTREAM
        runs[flank_gene.spec.chrom].append((start, start + FLANK_N))
    return {chrom: tuple(sorted(chrom_runs)) for chrom, chrom_runs in runs.items()}


# --- the genome ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RepeatFamily:
    consensus: np.ndarray
    copies_per_mb: int
    divergence: tuple[float, float]
    fragment_bp: Interval | None  # LINE-like: copies are 5'-truncated fragments of this length range
    poly_a: bool  # SINE-like: copies end in a poly-A tail


def _random_bases(rng: np.random.Generator, n: int, gc: float = 0.41) -> np.ndarray:
    return _BASES[rng.choice(4, size=n, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])]


def _repeat_library(rng: np.random.Generator) -> list[_RepeatFamily]:
    """Interspersed repeat families: many near-identical copies are what lets BPE learn long tokens."""
    sines = [_RepeatFamily(_random_bases(rng, int(rng.integers(280, 320)), 0.55), 110, (0.02, 0.15), None, True)
             for _ in range(4)]
    lines = [_RepeatFamily(_random_bases(rng, 6_000, 0.38), 45, (0.05, 0.2), (300, 2_000), False) for _ in range(3)]
    transposons = [_RepeatFamily(_random_bases(rng, int(rng.integers(200, 1_200))), 20, (0.1, 0.25), None, False)
                   for _ in range(4)]
    return sines + lines + transposons


def _background(rng: np.random.Generator, length: int) -> np.ndarray:
    """Unique sequence in isochore-like blocks whose GC content drifts along the chromosome."""
    block_ends = np.cumsum(rng.geometric(1 / 30_000, size=length // 10_000 + 1))
    block_gc = np.clip(rng.normal(0.41, 0.05, size=block_ends.size), 0.30, 0.62)
    # Positions past the last drawn block stay in it.
    gc = block_gc[np.minimum(np.searchsorted(block_ends, np.arange(length), side="right"), block_ends.size - 1)]
    draw = rng.random(length)
    return _BASES[(draw >= (1 - gc) / 2).astype(np.uint8) + (draw >= 0.5) + (draw >= 0.5 + gc / 2)]


def _mutated(rng: np.random.Generator, bases: np.ndarray, divergence: float) -> np.ndarray:
    copy = bases.copy()
    changed = rng.random(copy.size) < divergence
    copy[changed] = _BASES[rng.integers(0, 4, int(changed.sum()))]
    return copy


def _tandem_repeat(rng: np.random.Generator) -> np.ndarray:
    """A microsatellite (1–6 bp motif, 15–80 bp) or, one time in ten, a minisatellite (10–40 bp motif)."""
    if rng.random() < 0.1:
        motif = _random_bases(rng, int(rng.integers(10, 41)))
        copies = int(rng.integers(3, 15))
    else:
        motif = _random_bases(rng, int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.3, 0.3, 0.1, 0.2, 0.05, 0.05])))
        copies = max(2, int(rng.integers(15, 81)) // motif.size)
    return _mutated(rng, np.tile(motif, copies), 0.02)


def _chromosome(
    rng: np.random.Generator, length: int, families: list[_RepeatFamily], protected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bases (ASCII codes) and soft-mask of one chromosome; repeats never overwrite `protected` bases."""
    bases = _background(rng, length)
    masked = np.zeros(length, dtype=bool)
    protected_before = np.concatenate([[0], np.cumsum(protected)])

    def insert(copy: np.ndarray, start: int) -> None:
        end = start + copy.size
        if end <= length and protected_before[end] == protected_before[start]:
            bases[start:end] = copy
            masked[start:end] = True

    for family in families:
        for start in rng.integers(0, length, size=family.copies_per_mb * length // 1_000_000):
            copy = family.consensus
            if family.fragment_bp is not None:
                copy = copy[-int(rng.integers(*family.fragment_bp)):]
            copy = _mutated(rng, copy, rng.uniform(*family.divergence))
            if family.poly_a:
                copy = np.concatenate([copy, np.full(int(rng.integers(8, 25)), ord("A"), dtype=np.uint8)])
            if rng.random() < 0.5:
                copy = _COMPLEMENT[copy[::-1]]
            insert(copy, int(start))
    for start in rng.integers(0, length, size=200 * length // 1_000_000):
        insert(_tandem_repeat(rng), int(start))
    return bases, masked


def build_genome(layout: Layout) -> dict[str, str]:
    """Chromosome → sequence: soft-masked (lowercase) repeats over GC-varying unique sequence, with N runs.

    Exons and N runs are kept free of repeats, so gene-set exons are unmasked and the only N in them is the one
    deliberate run.
    """
    rng = _rng("genome")
    families = _repeat_library(rng)
    genome = {}
    for chrom, length in CHROMOSOMES.items():
        protected = np.zeros(length, dtype=bool)
        for gene in layout.on(chrom):
            for transcript in gene.transcripts:
                for start, end in transcript.exons:
                    protected[start:end] = True
        for start, end in layout.n_runs[chrom]:
            protected[start:end] = True
        bases, masked = _chromosome(rng, length, families, protected)
        bases[masked] += ord("a") - ord("A")
        for start, end in layout.n_runs[chrom]:
            bases[start:end] = ord("N")
        genome[chrom] = bases.tobytes().decode("ascii")
    return genome


# --- writing files -------------------------------------------------------------------------------------------------


@contextmanager
def _replacing(path: Path, *index_suffixes: str) -> Iterator[Path]:
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


def write_genome(path: Path, genome: dict[str, str]) -> None:
    """The FASTA (60 bases a line) and its .fai."""
    with _replacing(path, ".fai") as partial:
        with open(partial, "w") as handle:
            for chrom, sequence in genome.items():
                handle.write(f">{chrom}\n")
                handle.writelines(sequence[i : i + _FASTA_WIDTH] + "\n" for i in range(0, len(sequence), _FASTA_WIDTH))
        pysam.faidx(str(partial))


def _gtf_attributes(pairs: list[tuple[str, object]]) -> str:
    # GENCODE quotes every value except exon_number and level.
    return " ".join(f"{key} {value};" if key in ("exon_number", "level") else f'{key} "{value}";'
                    for key, value in pairs)


def _transcript_lines(gene: Gene, transcript: Transcript) -> list[str]:
    chrom, strand = gene.spec.chrom, gene.spec.strand
    coding_type = "protein_coding" if transcript.coding else "lncRNA"
    common = [
        ("gene_id", gene.gene_id), ("transcript_id", transcript.transcript_id), ("gene_type", gene.gene_type),
        ("gene_name", gene.spec.name), ("transcript_type", coding_type), ("transcript_name", transcript.name),
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


def write_annotation(path: Path, layout: Layout) -> None:
    """A gzipped GENCODE-format GTF of every gene in the layout."""
    lines = [
        "##description: evidence-based annotation of the human genome (GRCh38), version 0 (demo) - "
        "synthetic kb_assets demo annotation",
        "##provider: GENCODE",
        "##contact: none (generated by kb_assets.demo)",
        "##format: gtf",
        f"##date: {RELEASE_DATE}",
    ]
    for gene in layout.genes:
        attributes = [("gene_id", gene.gene_id), ("gene_type", gene.gene_type), ("gene_name", gene.spec.name),
                      ("level", 2)]
        lines.append("\t".join([gene.spec.chrom, "HAVANA", "gene", str(gene.start + 1), str(gene.end), ".",
                                gene.spec.strand, ".", _gtf_attributes(attributes)]))
        for transcript in gene.transcripts:
            lines += _transcript_lines(gene, transcript)
    with _replacing(path) as partial:
        # No file name and mtime 0 in the gzip header: the bytes depend on the content only.
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
            handle.write(("\n".join(lines) + "\n").encode())


def gene_set_text(layout: Layout) -> str:
    """The manifest's contents: GENE_SET in order, GENE_SET_BY_ID entries as versionless Ensembl ids."""
    entries = [layout.gene(name).gene_id_base if name in GENE_SET_BY_ID else name for name in GENE_SET]
    return GENE_SET_HEADER + "gene\n" + "".join(f"{entry}\n" for entry in entries)


def write_gene_set(path: Path, layout: Layout) -> None:
    """The ordered gene-set manifest (committed as data/gene_sets/demo_gene_set.tsv)."""
    with _replacing(path) as partial:
        partial.write_text(gene_set_text(layout))


# --- the cohort ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    subject_id: str
    sex: Literal["F", "M"]
    in_vcf: bool
    in_covariates: bool


def build_subjects() -> list[Subject]:
    """N_VCF_SUBJECTS genotyped subjects (N_GENOTYPES_ONLY of them without covariates) and N_COVARIATES_ONLY more."""
    rng = _rng("subjects")
    total = N_VCF_SUBJECTS + N_COVARIATES_ONLY
    no_covariates = set(rng.choice(N_VCF_SUBJECTS, size=N_GENOTYPES_ONLY, replace=False).tolist())
    sexes = rng.choice(["F", "M"], size=total)
    return [
        Subject(f"SUBJ{i + 1:04d}", str(sexes[i]), i < N_VCF_SUBJECTS, i not in no_covariates)
        for i in range(total)
    ]


@dataclass(frozen=True)
class _Site:
    chrom: str
    start: int  # 0-based position of the first REF base
    ref: str
    alts: tuple[str, ...]
    always_pass: bool = False  # the sites with a special role are never LowQual-filtered


def _variant_at(rng: np.random.Generator, genome: dict[str, str], chrom: str, start: int) -> _Site | None:
    """A random SNV (most), MNV, insertion or deletion (≤ 10 bp) whose REF starts at `start`; None where the REF
    would hold a base other than A/C/G/T."""
    kind = rng.choice(["snv", "mnv", "insertion", "deletion"], p=[0.74, 0.04, 0.08, 0.14])
    size = int(min(10, rng.geometric(0.45)))
    ref_length = {"mnv": 1 + min(size, 2), "deletion": 1 + size}.get(str(kind), 1)
    ref = genome[chrom][start : start + ref_length].upper()
    if len(ref) < ref_length or set(ref) - set("ACGT"):
        return None
    if kind == "snv":
        # Transitions outnumber transversions about 2:1 in real exomes.
        transversions = [b for b in "ACGT" if b not in (ref, _TRANSITION[ref])]
        alt = _TRANSITION[ref] if rng.random() < 0.67 else str(rng.choice(transversions))
    elif kind == "mnv":
        alt = "".join(_TRANSITION[b] for b in ref)
    elif kind == "insertion":
        alt = ref + _random_bases(rng, size).tobytes().decode()
    else:
        alt = ref[0]
    return _Site(chrom, start, ref, (alt,))


def _exonic_positions(rng: np.random.Generator, exons: Sequence[Interval], n: int) -> list[int]:
    """`n` positions drawn uniformly over the bases of `exons`."""
    starts = np.array([start for start, _ in exons])
    lengths = np.array([end - start for start, end in exons])
    offsets = rng.integers(0, lengths.sum(), size=n)
    cumulative = np.cumsum(lengths)
    which = np.searchsorted(cumulative, offsets, side="right")
    return (starts[which] + offsets - (cumulative[which] - lengths[which])).tolist()


def _special_sites(layout: Layout, genome: dict[str, str]) -> list[_Site]:
    """The multi-allelic SNV (two ALTs) and the deletion across an exon's edge (3 exonic + 3 intronic bases)."""
    multi_gene = layout.gene(MULTIALLELIC_GENE)
    start, end = multi_gene.principal_transcript.exons[1]
    position = (start + end) // 2
    ref = genome[multi_gene.spec.chrom][position].upper()
    alts = (_TRANSITION[ref], next(b for b in "ACGT" if b not in (ref, _TRANSITION[ref])))
    edge_gene = layout.gene(EDGE_DELETION_GENE)
    exon_end = sorted(edge_gene.principal_transcript.exons)[0][1]
    deleted = genome[edge_gene.spec.chrom][exon_end - 4 : exon_end + 3].upper()
    return [
        _Site(multi_gene.spec.chrom, position, ref, alts, always_pass=True),
        _Site(edge_gene.spec.chrom, exon_end - 4, deleted, (deleted[0],), always_pass=True),
    ]


def build_sites(layout: Layout, genome: dict[str, str]) -> list[_Site]:
    """Variant sites, sorted: 6–11 in the exons of each gene-set gene, 1–2 in every other gene, about 40 anywhere.

    Sites never overlap or touch one another, and no REF base is N.
    """
    rng = _rng("sites")
    candidates = _special_sites(layout, genome)
    for gene in layout.genes:
        n = int(rng.integers(6, 12)) if gene.spec.name in GENE_SET else int(rng.integers(1, 3))
        positions = _exonic_positions(rng, gene.principal_transcript.exons, n)
        candidates += [_variant_at(rng, genome, gene.spec.chrom, position) for position in positions]
    chroms = list(CHROMOSOMES)
    weights = np.array(list(CHROMOSOMES.values())) / sum(CHROMOSOMES.values())
    for chrom in rng.choice(chroms, size=40, p=weights).tolist():
        candidates.append(_variant_at(rng, genome, chrom, int(rng.integers(0, CHROMOSOMES[chrom]))))

    occupied = {chrom: np.zeros(length, dtype=bool) for chrom, length in CHROMOSOMES.items()}
    sites = []
    for site in candidates:
        if site is None:
            continue
        span = slice(max(0, site.start - 1), site.start + len(site.ref) + 1)
        if not occupied[site.chrom][span].any():
            occupied[site.chrom][span] = True
            sites.append(site)
    return sorted(sites, key=lambda site: (chroms.index(site.chrom), site.start))


def _genotype_calls(rng: np.random.Generator, frequencies: np.ndarray, males: np.ndarray, haploid_x: bool) -> list[str]:
    """GT of every subject: mostly phased, some unphased, a few missing; males homozygous on chrX.

    `frequencies` are of REF then each ALT. Every site gets at least one called ALT allele.
    """
    n = males.size
    alleles = np.searchsorted(np.cumsum(frequencies)[:-1], rng.random((n, 2)), side="right")
    missing = rng.random(n) < 0.015
    unphased = rng.random(n) < 0.07
    if not alleles[~missing].any():
        alleles[int(rng.choice(np.flatnonzero(~missing))), 0] = 1
    if haploid_x:
        # Non-PAR chrX in males: one haplotype, written as a homozygous diploid call as joint-called exomes do.
        alleles[males, 1] = alleles[males, 0]
    calls = []
    for (first, second), is_missing, is_unphased in zip(alleles.tolist(), missing, unphased):
        if is_missing:
            calls.append("./.")
        elif is_unphased:
            calls.append(f"{min(first, second)}/{max(first, second)}")
        else:
            calls.append(f"{first}|{second}")
    return calls


def _info(calls: list[str], n_alts: int) -> str:
    """AC, AN and AF over the called genotypes."""
    alleles = [int(allele) for call in calls if call != "./." for allele in call.replace("|", "/").split("/")]
    counts = np.bincount(alleles, minlength=n_alts + 1)[1:]
    total = len(alleles)
    return (f"AC={','.join(str(count) for count in counts)};AN={total};"
            f"AF={','.join(f'{count / total:.4g}' for count in counts)}")


def write_cohort_vcf(
    path: Path, layout: Layout, genome: dict[str, str], subjects: list[Subject], reference_name: str
) -> None:
    """A bgzipped, tabix-indexed VCFv4.2 of the genotyped subjects; allele frequencies skewed rare.

    `reference_name` (the FASTA's file name) goes into the ##reference header line.
    """
    rng = _rng("genotypes")
    sites = build_sites(layout, genome)
    genotyped = [subject for subject in subjects if subject.in_vcf]
    males = np.array([subject.sex == "M" for subject in genotyped])
    filterable = [index for index, site in enumerate(sites) if not site.always_pass]
    lowqual = set(rng.choice(filterable, size=N_LOWQUAL, replace=False).tolist())
    header = [
        "##fileformat=VCFv4.2",
        f"##fileDate={RELEASE_DATE.replace('-', '')}",
        "##source=kb_assets.demo",
        f"##reference={reference_name}",
        *(f"##contig=<ID={chrom},length={length},assembly={ASSEMBLY}>" for chrom, length in CHROMOSOMES.items()),
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="Low variant quality (QUAL below 30)">',
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Alternate allele count in called genotypes">',
        '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele frequency in called genotypes">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *(subject.subject_id for subject in genotyped)]),
    ]
    records = []
    for index, site in enumerate(sites):
        # Most variants are rare; about one in eight is common.
        common = rng.random() < 0.12
        alt_frequencies = rng.uniform(0.05, 0.5, len(site.alts)) if common else rng.beta(0.3, 12, len(site.alts))
        alt_frequencies /= len(site.alts)
        calls = _genotype_calls(rng, np.concatenate([[1 - alt_frequencies.sum()], alt_frequencies]), males,
                                site.chrom == "chrX")
        quality = rng.uniform(5, 29) if index in lowqual else rng.uniform(50, 3000)
        records.append("\t".join([
            site.chrom, str(site.start + 1), ".", site.ref, ",".join(site.alts), f"{quality:.0f}",
            "LowQual" if index in lowqual else "PASS", _info(calls, len(site.alts)), "GT", *calls,
        ]))
    with _replacing(path, ".tbi") as partial:
        with pysam.BGZFile(str(partial), "wb") as handle:
            handle.write(("\n".join(header + records) + "\n").encode())
        pysam.tabix_index(str(partial), preset="vcf", force=True, index=f"{partial}.tbi")


def write_covariates(path: Path, subjects: list[Subject]) -> None:
    """subject_id, age, sex, pc1..pc10, batch, site, label for the subjects with covariates.

    Small real structure: site shifts age and the ancestry PCs, batches follow recruitment waves of sites
    (and leave a trace in pc4), and the label depends on age and sex.
    """
    rng = _rng("covariates")
    site_age = rng.normal(0, 3, len(SITES))
    site_ancestry = rng.normal(0, 0.02, (len(SITES), 3))
    pc_sd = 0.02 / np.sqrt(np.arange(1, 11))
    columns = ["subject_id", "age", "sex", *(f"pc{i}" for i in range(1, 11)), "batch", "site", "label"]
    rows = ["\t".join(columns)]
    for subject in subjects:
        site = int(rng.choice(len(SITES), p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1]))
        batch = site // 2 if rng.random() < 0.85 else int(rng.integers(len(BATCHES)))
        age = float(np.clip(rng.normal(61 + site_age[site], 7.5), 40, 80))
        pcs = rng.normal(0, pc_sd)
        pcs[:3] += site_ancestry[site]
        pcs[3] += 0.01 * (batch - 1)
        risk = -0.4 + 0.05 * (age - 60) + 0.3 * (subject.sex == "M")
        label = int(rng.random() < 1 / (1 + np.exp(-risk)))
        if subject.in_covariates:
            rows.append("\t".join([subject.subject_id, f"{age:.1f}", subject.sex, *(f"{pc:.6f}" for pc in pcs),
                                   BATCHES[batch], SITES[site], str(label)]))
    with _replacing(path) as partial:
        partial.write_text("\n".join(rows) + "\n")


# --- the checkpoint ------------------------------------------------------------------------------------------------

CHECKPOINT_FILES = (CONFIG_FILE, BIN_WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)


def write_demo_checkpoint(folder: Path, genome: dict[str, str]) -> None:
    """A tiny DNABERT-2 checkpoint: a BPE tokenizer trained on the demo genome, seeded random weights.

    write_checkpoint writes the tokenizer files last, so a folder missing any of CHECKPOINT_FILES is one an
    interrupted run left behind.
    """
    tokenizer = train_bpe_tokenizer(genome.values(), vocab_size=VOCAB_SIZE)
    write_model_checkpoint(folder, tokenizer, **CHECKPOINT_SHAPE, seed=DEMO_SEED)


# --- everything ----------------------------------------------------------------------------------------------------


def generate_demo_inputs(recipe: Recipe, *, force: bool = False) -> dict[str, Path]:
    """Write every input the recipe's `inputs` names; returns input name → path.

    An input whose files all exist is left alone unless `force`. The layout and genome are rebuilt on every call
    (well under a second), so a partial rerun writes files consistent with the ones already there.
    """
    inputs = recipe.inputs
    layout = build_layout()
    genome = build_genome(layout)
    subjects = build_subjects()
    # name → (path, the files that must all exist for it to count as written, writer)
    plan: dict[str, tuple[Path, list[Path], Callable[[Path], None]]] = {
        "fasta": (inputs.fasta, [Path(f"{inputs.fasta}.fai")], lambda path: write_genome(path, genome)),
        "gtf": (inputs.gtf, [], lambda path: write_annotation(path, layout)),
        "gene_set": (inputs.gene_set, [], lambda path: write_gene_set(path, layout)),
        "checkpoint": (inputs.checkpoint, [inputs.checkpoint / name for name in CHECKPOINT_FILES],
                       lambda path: write_demo_checkpoint(path, genome)),
    }
    if inputs.vcf is not None:
        plan["vcf"] = (inputs.vcf, [Path(f"{inputs.vcf}.tbi")],
                       lambda path: write_cohort_vcf(path, layout, genome, subjects, inputs.fasta.name))
    if inputs.covariates is not None:
        plan["covariates"] = (inputs.covariates, [], lambda path: write_covariates(path, subjects))
    for path, companions, write in plan.values():
        if force or not all(file.exists() for file in [path, *companions]):
            write(path)
    return {name: path for name, (path, _, _) in plan.items()}
