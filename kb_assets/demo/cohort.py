"""The demo cohort: subjects, a VCF holding every genotype shape the haplotype rules handle (multi-allelic sites, a
deletion across an exon edge, insertions, missing and unphased calls, LowQual records, haploid chrX in males),
written with the shared VCF writer, and a covariates table with a little real structure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kb_assets.benchmarks.synthetic import Interval, Layout, genotype_text, replacing, vcf_writer
from kb_assets.demo.genome import random_bases
from kb_assets.demo.layout import ASSEMBLY, CHROMOSOMES, GENE_SET, RELEASE_DATE, demo_rng

N_VCF_SUBJECTS = 220
# Covariates leave out two VCF subjects and add two subjects without genotypes, so the cohort/covariate
# intersection has something to report.
N_COVARIATES_ONLY = 2
N_GENOTYPES_ONLY = 2
SITES = ("site_A", "site_B", "site_C", "site_D", "site_E", "site_F")
BATCHES = ("batch1", "batch2", "batch3")

# Variants with a special role, placed before all others.
MULTIALLELIC_GENE = "SCN2A_demo"
EDGE_DELETION_GENE = "CHD8_demo"
N_LOWQUAL = 5

_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}


@dataclass(frozen=True)
class Subject:
    subject_id: str
    sex: Literal["F", "M"]
    in_vcf: bool
    in_covariates: bool


def build_subjects() -> list[Subject]:
    """N_VCF_SUBJECTS genotyped subjects (N_GENOTYPES_ONLY of them without covariates) and N_COVARIATES_ONLY more."""
    rng = demo_rng("subjects")
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
        alt = ref + random_bases(rng, size).tobytes().decode()
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
    ref = genome[multi_gene.chrom][position].upper()
    alts = (_TRANSITION[ref], next(b for b in "ACGT" if b not in (ref, _TRANSITION[ref])))
    edge_gene = layout.gene(EDGE_DELETION_GENE)
    exon_end = sorted(edge_gene.principal_transcript.exons)[0][1]
    deleted = genome[edge_gene.chrom][exon_end - 4 : exon_end + 3].upper()
    return [
        _Site(multi_gene.chrom, position, ref, alts, always_pass=True),
        _Site(edge_gene.chrom, exon_end - 4, deleted, (deleted[0],), always_pass=True),
    ]


def build_sites(layout: Layout, genome: dict[str, str]) -> list[_Site]:
    """Variant sites, sorted: 6–11 in the exons of each gene-set gene, 1–2 in every other gene, about 40 anywhere.

    Sites never overlap or touch one another, and no REF base is N.
    """
    rng = demo_rng("sites")
    candidates = _special_sites(layout, genome)
    for gene in layout.genes:
        n = int(rng.integers(6, 12)) if gene.name in GENE_SET else int(rng.integers(1, 3))
        positions = _exonic_positions(rng, gene.principal_transcript.exons, n)
        candidates += [_variant_at(rng, genome, gene.chrom, position) for position in positions]
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


@dataclass(frozen=True)
class _Calls:
    """Genotype calls of every subject at one site: allele indices (unphased calls smaller first)."""

    first: np.ndarray
    second: np.ndarray
    missing: np.ndarray
    unphased: np.ndarray

    def text(self) -> bytes:
        return genotype_text(self.first, self.second, ~self.unphased, self.missing)

    def info(self, n_alts: int) -> str:
        """AC, AN and AF over the called genotypes."""
        called = np.concatenate([self.first[~self.missing], self.second[~self.missing]])
        counts = np.bincount(called, minlength=n_alts + 1)[1:]
        total = called.size
        return (f"AC={','.join(str(count) for count in counts)};AN={total};"
                f"AF={','.join(f'{count / total:.4g}' for count in counts)}")


def _genotype_calls(rng: np.random.Generator, frequencies: np.ndarray, males: np.ndarray, haploid_x: bool) -> _Calls:
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
    first = np.where(unphased, alleles.min(axis=1), alleles[:, 0])
    second = np.where(unphased, alleles.max(axis=1), alleles[:, 1])
    return _Calls(first, second, missing, unphased & ~missing)


def write_cohort_vcf(
    path: Path, layout: Layout, genome: dict[str, str], subjects: list[Subject], reference_name: str
) -> None:
    """A bgzipped, tabix-indexed VCFv4.2 of the genotyped subjects; allele frequencies skewed rare.

    `reference_name` (the FASTA's file name) goes into the ##reference header line.
    """
    rng = demo_rng("genotypes")
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
    ]
    with vcf_writer(path, header, [subject.subject_id for subject in genotyped]) as vcf:
        for index, site in enumerate(sites):
            # Most variants are rare; about one in eight is common.
            common = rng.random() < 0.12
            alt_frequencies = (rng.uniform(0.05, 0.5, len(site.alts)) if common
                               else rng.beta(0.3, 12, len(site.alts)))
            alt_frequencies /= len(site.alts)
            calls = _genotype_calls(rng, np.concatenate([[1 - alt_frequencies.sum()], alt_frequencies]), males,
                                    site.chrom == "chrX")
            quality = rng.uniform(5, 29) if index in lowqual else rng.uniform(50, 3000)
            vcf.write(site.chrom, site.start + 1, site.ref, site.alts, calls.text(), quality=f"{quality:.0f}",
                      filters="LowQual" if index in lowqual else "PASS", info=calls.info(len(site.alts)))


def write_covariates(path: Path, subjects: list[Subject]) -> None:
    """subject_id, age, sex, pc1..pc10, batch, site, label for the subjects with covariates.

    Small real structure: site shifts age and the ancestry PCs, batches follow recruitment waves of sites
    (and leave a trace in pc4), and the label depends on age and sex.
    """
    rng = demo_rng("covariates")
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
    with replacing(path) as partial:
        partial.write_text("\n".join(rows) + "\n")
