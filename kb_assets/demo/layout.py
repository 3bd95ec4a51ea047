"""The demo's genes: a hand-written table of gene structures, each kind exercising one rule of region extraction
or transcript choice, placed on three small chromosomes with N runs between them; and the demo gene set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kb_assets.benchmarks.synthetic import (
    CANONICAL_TAGS,
    Gene,
    IdCounters,
    Interval,
    Layout,
    LocalTranscript,
    coding_span,
    place_gene,
    replacing,
)

DEMO_SEED = 20240601
CHROMOSOMES = {"chr1": 1_000_000, "chr2": 800_000, "chrX": 400_000}
ASSEMBLY = "demo-hg38-like"
# Dates written into file headers: fixed, so the files do not change from day to day.
RELEASE_DATE = "2024-06-01"

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
# Part of the committed data/gene_sets/demo_gene_set.tsv, which the generator rewrites identically.
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


def demo_rng(stream: str) -> np.random.Generator:
    # One independent stream per input: changing how one input is drawn leaves the others unchanged.
    return np.random.default_rng([DEMO_SEED, *stream.encode()])


def _local_exons(rng: np.random.Generator, kind: GeneKind) -> list[Interval]:
    """Exons as distances from the transcription start, in transcription order. The lengths are the demo's own,
    per kind (short internal exons, a 3.5–6 kb last exon for long_exon), not the benchmarks' exon model: each kind
    must show the rule it exercises within a 2.2 Mb genome."""
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


def _local_transcripts(
    rng: np.random.Generator, kind: GeneKind, exons: list[Interval]
) -> tuple[list[LocalTranscript], int]:
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
        return coding_span([exons[i] for i in indices], utr5, utr3_bp)

    if kind == "lncrna":
        transcripts = [LocalTranscript(everything, None, ("basic", "Ensembl_canonical"))]
        if internal and rng.random() < 0.5:
            transcripts.append(LocalTranscript(skipping(int(rng.choice(internal))), None, ("basic",)))
        return transcripts, 0
    if kind in ("standard", "single_exon", "long_exon"):
        transcripts = [LocalTranscript(everything, coding(everything), CANONICAL_TAGS)]
        if kind == "standard" and len(internal) >= 2 and rng.random() < 0.5:
            alternative = skipping(int(rng.choice(internal)))
            transcripts.append(LocalTranscript(alternative, coding(alternative), ("basic",)))
        return transcripts, 0
    skipped = int(rng.choice(internal))
    shorter = skipping(skipped)
    if kind == "alternative":
        transcripts = [
            LocalTranscript(everything, coding(everything), ("basic",)),
            LocalTranscript(shorter, coding(shorter), CANONICAL_TAGS),
        ]
        others = [i for i in internal if i != skipped]
        for _ in range(int(rng.integers(0, 3))):
            extra = skipping(*rng.choice(others, size=2, replace=False).tolist())
            if extra not in [t.exon_indices for t in transcripts]:
                transcripts.append(LocalTranscript(extra, coding(extra), ("basic",)))
        return transcripts, 1
    if kind == "mane_only":
        return [
            LocalTranscript(everything, coding(everything), ("basic",)),
            LocalTranscript(shorter, coding(shorter), ("basic", "MANE_Select")),
        ], 1
    # untagged: the full-length transcript ends its CDS early (a long 3' UTR), so the shorter one has the longer CDS.
    full_length = sum(end - start for start, end in exons)
    transcripts = [
        LocalTranscript(everything, coding(everything, full_length * 2 // 3), ("basic",)),
        LocalTranscript(shorter, coding(shorter, 80), ("basic",)),
    ]
    cds_lengths = [t.coding[1] - t.coding[0] for t in transcripts]
    return transcripts, int(np.argmax(cds_lengths))


def build_layout() -> Layout:
    """Every gene of GENES with its transcripts, placed on the chromosomes, and the N runs between them."""
    rng = demo_rng("genes")
    models = []
    for spec in GENES:
        exons = _local_exons(rng, spec.kind)
        transcripts, principal = _local_transcripts(rng, spec.kind, exons)
        models.append((spec, exons, transcripts, principal))

    genes: list[Gene] = []
    counters = IdCounters(GENE_ID_BASE, GENE_ID_BASE)
    for chrom, chrom_length in CHROMOSOMES.items():
        on_chrom = [(index, model) for index, model in enumerate(models) if model[0].chrom == chrom]
        lengths = np.array([model[1][-1][1] for _, model in on_chrom])
        # Intergenic gaps: a minimum plus a random share of the free space, flanked by the telomeric N runs.
        free = chrom_length - 2 * TELOMERE_N - lengths.sum() - (len(on_chrom) + 1) * MIN_INTERGENIC
        if free < 0:
            raise ValueError(f"the genes of {chrom} need {-free} bp more than CHROMOSOMES gives it")
        gaps = MIN_INTERGENIC + np.floor(rng.dirichlet(np.ones(len(on_chrom) + 1)) * free).astype(int)
        starts = TELOMERE_N + np.cumsum(gaps[:-1]) + np.concatenate([[0], np.cumsum(lengths[:-1])])
        for (index, (spec, exons, transcripts, principal)), start in zip(on_chrom, starts):
            genes.append(place_gene(rng, GENE_ID_BASE + index, counters, spec.name, chrom, spec.strand,
                                    "lncRNA" if spec.kind == "lncrna" else "protein_coding", int(start), exons,
                                    transcripts, principal))
    return Layout(dict(CHROMOSOMES), tuple(genes), _n_runs(genes))


def _n_runs(genes: list[Gene]) -> dict[str, tuple[Interval, ...]]:
    """10 kb at both ends of each chromosome, an assembly gap in chr1's widest intergenic gap, and the short runs
    in an exon, an intron and a promoter flank."""
    runs = {chrom: [(0, TELOMERE_N), (length - TELOMERE_N, length)] for chrom, length in CHROMOSOMES.items()}
    by_name = {gene.name: gene for gene in genes}

    chr1 = [gene for gene in genes if gene.chrom == "chr1"]
    before, after = max(zip(chr1, chr1[1:]), key=lambda pair: pair[1].start - pair[0].end)
    middle, gap = (before.end + after.start) // 2, min(ASSEMBLY_GAP_N, (after.start - before.end) // 2)
    runs["chr1"].append((middle - gap // 2, middle + gap // 2))

    exon_gene = by_name[EXON_N_GENE]
    start, end = max(exon_gene.principal_transcript.exons, key=lambda exon: exon[1] - exon[0])
    runs[exon_gene.chrom].append(((start + end) // 2, (start + end) // 2 + EXON_N))

    intron_gene = by_name[INTRON_N_GENE]
    exons = sorted(exon for transcript in intron_gene.transcripts for exon in transcript.exons)
    start, end = max(((a[1], b[0]) for a, b in zip(exons, exons[1:])), key=lambda intron: intron[1] - intron[0])
    runs[intron_gene.chrom].append(((start + end) // 2, (start + end) // 2 + INTRON_N))

    flank_gene = by_name[FLANK_N_GENE]
    if flank_gene.strand == "+":
        end = flank_gene.start - FLANK_N_UPSTREAM
        runs[flank_gene.chrom].append((end - FLANK_N, end))
    else:
        start = flank_gene.end + FLANK_N_UPSTREAM
        runs[flank_gene.chrom].append((start, start + FLANK_N))
    return {chrom: tuple(sorted(chrom_runs)) for chrom, chrom_runs in runs.items()}


def gene_set_text(layout: Layout) -> str:
    """The manifest's contents: GENE_SET in order, GENE_SET_BY_ID entries as versionless Ensembl ids."""
    entries = [layout.gene(name).gene_id_base if name in GENE_SET_BY_ID else name for name in GENE_SET]
    return GENE_SET_HEADER + "gene\n" + "".join(f"{entry}\n" for entry in entries)


def write_gene_set(path: Path, layout: Layout) -> None:
    """The ordered gene-set manifest (committed as data/gene_sets/demo_gene_set.tsv)."""
    with replacing(path) as partial:
        partial.write_text(gene_set_text(layout))
