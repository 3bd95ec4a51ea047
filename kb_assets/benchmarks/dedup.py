"""Benchmark of haplotype deduplication: how many forward passes a synthetic cohort needs (issue 5).

Requirement: on a synthetic cohort of 20,000 subjects with realistic variant density (about 1 variant per kb per
haplotype, allele frequencies skewed to rare), the number of forward passes is at most 5% of subjects × regions.

What is synthesized (in a temporary folder), with the shared generator (kb_assets.benchmarks.synthetic):
- A reference FASTA (one contig, GC drifting in isochore-like blocks) holding `n_genes` genes on both strands,
  10 kb apart, with the generator's protein-coding exon structure: exon count log-normal (median 8), exon lengths
  log-normal (first exon with the 5' UTR median 200 bp, internal exons 135 bp, last exon with the 3' UTR 2.2 kb;
  over all exons median ~150 bp, ~5% over 2 kb), introns log-normal (median 1.5 kb). The regions table is what
  `extract_regions` gives in `exons` mode (columns `REGION_DTYPES`, sequences read on the gene's strand).
- A bgzipped, tabix-indexed VCF of `n_subjects` phased diploid subjects over those exons. Allele counts follow
  the neutral sample site-frequency spectrum P(k) ∝ 1/k^a (k = 1 … 2N−1 ALT copies among the 2N haplotypes;
  a = `sfs_exponent`, 1 by default: the standard-neutral expectation, sites spread evenly over log frequency,
  for 20,000 subjects ~10% singletons and ~60% below 1% frequency, while the carried ALT alleles spread evenly
  over frequency, so the sites below 1% hold only ~1% of them; a > 1 adds rare sites, as population growth does).
  Chosen over a Beta frequency density because it is the textbook rare-skewed spectrum with no free shape
  parameter, and because with θ = 1/kb it gives human-like diversity (π ≈ 0.001). Sites are placed uniformly in
  the exons at the rate that makes the expected number of ALT alleles each haplotype carries `variants_per_kb`
  per kb of region sequence (~11 sites/kb at 20,000 subjects). Each site's k ALT copies go to k haplotypes
  drawn at random, independently of the other sites: Hardy–Weinberg genotypes and no linkage disequilibrium
  between sites, a pessimistic case for deduplication (real exon haplotypes are in strong LD, so fewer).
  `indel_fraction` of the sites are small indels (half deletions, half insertions, 1–10 bp, geometric), the
  rest SNVs; all biallelic, all PASS.

Then `build_haplotypes` runs in `alt_if_present` (the recipe default: one sequence per subject and region) and in
`phased` (two), timed, with the peak resident memory sampled while each runs. The forward passes are the distinct
sequences (reference sequences included): each is embedded once, on both strands with RC averaging (so 2 strand
passes each), and long sequences in several windows. `kb-assets bench dedup` prints
`format_report(run_dedup_benchmark())`.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kb_assets.benchmarks.synthetic import (
    SNV,
    coding_exon_count,
    draw_sites,
    exon_lengths,
    gene_exons,
    independent_variants,
    isochore_bases,
    write_cohort_vcf,
    write_fasta,
)
from kb_assets.genome.fasta import ReferenceGenome
from kb_assets.genome.haplotypes import build_haplotypes
from kb_assets.genome.regions import REGION_DTYPES
from kb_assets.genome.sequence import reverse_complement

REQUIRED_MAX_RATIO = 0.05  # forward passes ÷ (subjects × regions)
CONTIG = "chr1"
_GIB = 1 << 30
_FLANK = 10_000  # bases before the first gene, between genes and after the last
LENGTH_BINS = ((0, 200), (200, 500), (500, 1000), (1000, 3000), (3000, None))  # bp, for the per-length breakdown


@dataclass(frozen=True)
class SyntheticCohort:
    """The files and facts of one synthesized cohort."""

    fasta: Path
    vcf: Path
    regions: pd.DataFrame  # as extract_regions(…, "exons") returns it
    n_subjects: int
    allele_counts: np.ndarray  # ALT copies among the 2N haplotypes, one per VCF record
    n_indels: int

    @property
    def region_bp(self) -> int:
        return int(self.regions.length.sum())

    @property
    def variants_per_kb(self) -> float:
        """ALT alleles a haplotype carries per kb of region sequence, as realised (mean over haplotypes)."""
        haplotypes = 2 * self.n_subjects
        return float(self.allele_counts.sum()) / (haplotypes * self.region_bp) * 1000 if self.region_bp else 0.0


def synthesize_cohort(
    folder: str | os.PathLike,
    n_subjects: int = 20000,
    n_genes: int = 38,
    variants_per_kb: float = 1.0,
    sfs_exponent: float = 1.0,
    indel_fraction: float = 0.1,
    seed: int = 0,
) -> SyntheticCohort:
    """Write the reference FASTA and the cohort VCF (see the module doc) into `folder`."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    genes = _gene_structures(n_genes, rng)
    contig_length = _FLANK + sum(gene_end - gene_start + _FLANK for _, gene_start, gene_end, _ in genes)
    bases = np.concatenate(list(isochore_bases(rng, contig_length)))
    contig = bases.tobytes().decode()
    fasta = folder / "reference.fa"
    write_fasta(fasta, [(CONTIG, [bases])])
    regions = _regions_table(genes, contig)
    spans = sorted(zip(regions.start.tolist(), regions.end.tolist()))
    sites = draw_sites(rng, {CONTIG: spans} if spans else {}, 2 * n_subjects, variants_per_kb, sfs_exponent,
                       indel_fraction)
    vcf = folder / "cohort.vcf.gz"
    written = write_cohort_vcf(vcf, independent_variants(rng, sites, 2 * n_subjects),
                               lambda _, start, end: contig[start:end], [f"S{i + 1:06d}" for i in range(n_subjects)],
                               {CONTIG: contig_length}, rng)
    return SyntheticCohort(fasta, vcf, regions, n_subjects, written.alt_copies, int((written.kind != SNV).sum()))


def run_dedup_benchmark(
    n_subjects: int = 20000,
    n_genes: int = 38,
    variants_per_kb: float = 1.0,
    sfs_exponent: float = 1.0,
    indel_fraction: float = 0.1,
    modes: tuple[str, ...] = ("alt_if_present", "phased"),
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Synthesize a cohort, run `build_haplotypes` in each mode and return the counts, ratios, times and memory."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="kb_assets_dedup_bench_") as scratch:
        started = time.perf_counter()
        cohort = synthesize_cohort(scratch, n_subjects, n_genes, variants_per_kb, sfs_exponent, indel_fraction, seed)
        synthesis_s = time.perf_counter() - started
        regions = cohort.regions
        counts = cohort.allele_counts
        haplotypes = 2 * n_subjects
        lengths = regions.length.to_numpy()
        result: dict = {
            "n_subjects": n_subjects,
            "n_genes": n_genes,
            "n_regions": len(regions),
            "region_bp": cohort.region_bp,
            "region_length_median": float(np.median(lengths)) if len(lengths) else 0.0,
            "region_length_max": int(lengths.max()) if len(lengths) else 0,
            "regions_over_1kb": int((lengths > 1000).sum()),
            "subject_region_pairs": n_subjects * len(regions),
            "seed": seed,
            "variants_per_kb_target": variants_per_kb,
            "sfs_exponent": sfs_exponent,
            "vcf_records": len(counts),
            "vcf_indels": cohort.n_indels,
            "vcf_mib": cohort.vcf.stat().st_size / (1 << 20),
            "variants_per_kb": cohort.variants_per_kb,
            "sites_per_kb": len(counts) / cohort.region_bp * 1000 if cohort.region_bp else 0.0,
            "singleton_fraction": float((counts == 1).mean()) if len(counts) else 0.0,
            "rare_site_fraction": float((counts < 0.01 * haplotypes).mean()) if len(counts) else 0.0,
            # Share of the carried ALT alleles that sit at sites below 1% frequency: what makes haplotypes unique.
            "rare_allele_share": (
                float(counts[counts < 0.01 * haplotypes].sum() / counts.sum()) if counts.sum() else 0.0
            ),
            "linked_expected_haplotypes": (
                _ewens_expected_haplotypes(lengths * variants_per_kb / 1000, haplotypes) if sfs_exponent == 1 else None
            ),
            "synthesis_s": synthesis_s,
            "modes": {},
        }
        genome = ReferenceGenome(cohort.fasta)
        try:
            for mode in modes:
                with _PeakRss() as memory:
                    started = time.perf_counter()
                    haplotype_result = build_haplotypes(cohort.vcf, regions, genome, mode=mode)
                    seconds = time.perf_counter() - started
                result["modes"][mode] = _mode_numbers(haplotype_result, regions, n_subjects, mode)
                result["modes"][mode].update(seconds=seconds, peak_rss_gib=memory.peak / _GIB,
                                             rss_before_gib=memory.before / _GIB)
                del haplotype_result
        finally:
            genome.close()
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB
    return result


def format_report(result: dict) -> str:
    """Lines for the terminal and the README, ending with whether the requirement holds."""
    pairs = result["subject_region_pairs"]
    lines = [
        f"dedup benchmark: {result['n_subjects']:,} subjects × {result['n_regions']} regions (exons of "
        f"{result['n_genes']} synthetic genes, {result['region_bp']:,} bp, median {result['region_length_median']:.0f} "
        f"bp, {result['regions_over_1kb']} over 1 kb, longest {result['region_length_max']:,} bp) = {pairs:,} "
        f"subject × region pairs; seed {result['seed']}",
        f"  cohort: {result['vcf_records']:,} VCF records ({result['vcf_indels']} indels, {result['vcf_mib']:.0f} MiB "
        f"bgzipped), {result['sites_per_kb']:.1f} sites/kb; SFS ∝ 1/k^{result['sfs_exponent']:g}: "
        f"{result['singleton_fraction']:.0%} singletons, {result['rare_site_fraction']:.0%} of sites below 1% "
        f"frequency carrying {result['rare_allele_share']:.1%} of the ALT alleles; independent sites (no LD)",
        f"  realised density: {result['variants_per_kb']:.3f} ALT alleles per kb per haplotype "
        f"(target {result['variants_per_kb_target']:g}); synthesis {result['synthesis_s']:.1f} s",
        "",
        f"{'mode':<16}{'units':>12}{'distinct seqs':>15}{'÷ S×R':>9}{'2 strands ÷ S×R':>17}{'÷ units':>9}"
        f"{'bp ÷ all bp':>13}{'REF pairs':>11}{'per region med/max':>20}{'seconds':>9}{'peak RSS':>10}",
    ]
    for mode, numbers in result["modes"].items():
        lines.append(
            f"{mode:<16}{numbers['units']:>12,}{numbers['distinct_sequences']:>15,}{numbers['ratio']:>9.3%}"
            f"{numbers['strand_pass_ratio']:>17.3%}{numbers['ratio_per_unit']:>9.3%}{numbers['bp_ratio']:>13.3%}"
            f"{numbers['reference_unit_fraction']:>11.1%}"
            f"{numbers['per_region_median']:>12.0f}/{numbers['per_region_max']:<7,}{numbers['seconds']:>9.1f}"
            f"{numbers['peak_rss_gib']:>7.2f} GiB"
        )
    lines += [
        "  units: subject × region × haplotype sequences the mode assigns; distinct seqs: forward passes "
        "(reference sequences included);",
        "  ÷ S×R: distinct ÷ (subjects × regions); 2 strands: RC averaging embeds each sequence on both strands; "
        "bp: distinct sequence bases ÷ all units' bases;",
        "  REF pairs: units carrying the reference sequence.",
    ]
    linked = result.get("linked_expected_haplotypes")
    if linked is not None:
        lines.append(
            f"  for comparison, full linkage (neutral coalescent without recombination, θ = "
            f"{result['variants_per_kb_target']:g}/kb): {linked:,.0f} distinct haplotypes expected over all regions "
            f"({linked / pairs:.3%} of S×R)"
        )
    lines.append(f"  process peak RSS {result['peak_rss_gib']:.2f} GiB")
    for mode, numbers in result["modes"].items():
        parts = [f"{row['lengths']}: {row['regions']} regions, {row['distinct_sequences']:,} ({row['ratio']:.2%})"
                 for row in numbers["by_length"] if row["regions"]]
        lines.append(f"  {mode} by region length (subjects' distinct sequences, ÷ S×R): " + "; ".join(parts))
    lines.append("")
    for mode, numbers in result["modes"].items():
        verdict = "holds" if numbers["ratio"] <= REQUIRED_MAX_RATIO else "does NOT hold"
        strands = "holds" if numbers["strand_pass_ratio"] <= REQUIRED_MAX_RATIO else "does not hold"
        lines.append(
            f"{mode}: {numbers['distinct_sequences']:,} forward passes ≤ 5% of subjects × regions "
            f"({REQUIRED_MAX_RATIO * pairs:,.0f}): {verdict} ({numbers['ratio']:.3%}); counting both strands "
            f"({2 * numbers['distinct_sequences']:,} passes) it {strands} ({numbers['strand_pass_ratio']:.3%})"
        )
    return "\n".join(lines)


def _mode_numbers(result, regions: pd.DataFrame, n_subjects: int, mode: str) -> dict:
    """Counts of one `build_haplotypes` result: its alleles table lists every region's distinct alleles with their
    carriers (allele 0, the reference, carried by every unit not listed in the sparse assignments)."""
    ploidy = result.ploidy
    distinct = result.counts["unique_sequences"]
    alleles = result.alleles
    # Distinct sequences per region among the subjects (a region's reference counts when a subject carries it).
    carried = alleles[alleles["carriers"] > 0]
    per_region = carried.groupby("region_id").size().reindex(regions["region_id"], fill_value=0).to_numpy()
    units = n_subjects * len(regions) * ploidy
    all_bp = n_subjects * ploidy * int(regions.length.sum())
    distinct_bp = int(alleles.drop_duplicates(["region_id", "sequence"])["length"].sum())
    return {
        "units": units,
        "distinct_sequences": distinct,
        "non_reference_sequences": distinct - len(set(regions.sequence)),
        "ratio": distinct / (n_subjects * len(regions)) if len(regions) else 0.0,
        "strand_pass_ratio": 2 * distinct / (n_subjects * len(regions)) if len(regions) else 0.0,
        "ratio_per_unit": distinct / units if units else 0.0,
        "bp_ratio": distinct_bp / all_bp if all_bp else 0.0,
        "reference_unit_fraction": 1.0 - len(result.assignments) / units if units else 0.0,
        "per_region_median": float(np.median(per_region)) if len(per_region) else 0.0,
        "per_region_max": int(per_region.max()) if len(per_region) else 0,
        "per_region": per_region.tolist(),
        "by_length": _by_length(per_region, regions.length.to_numpy(), n_subjects),
        "counts": dict(result.counts),
    }


def _by_length(per_region: np.ndarray, lengths: np.ndarray, n_subjects: int) -> list[dict]:
    """Regions grouped by length: how many, their subjects' distinct sequences and that ÷ (subjects × regions)."""
    rows = []
    for low, high in LENGTH_BINS:
        chosen = (lengths >= low) & (lengths < (high if high is not None else np.inf))
        n, distinct = int(chosen.sum()), int(per_region[chosen].sum())
        label = f"{low}–{high} bp" if high is not None else f"≥ {low} bp"
        rows.append({"lengths": label, "regions": n, "distinct_sequences": distinct,
                     "ratio": distinct / (n_subjects * n) if n else 0.0})
    return rows


def _ewens_expected_haplotypes(thetas: np.ndarray, haplotypes: int) -> float:
    """Σ over regions of E[distinct haplotypes] among `haplotypes` under the infinite-alleles model with no
    recombination (Ewens): Σ_{i<n} θ/(θ + i), θ the region's expected ALT alleles per haplotype."""
    i = np.arange(haplotypes, dtype=np.float64)
    return float(sum((theta / (theta + i)).sum() if theta > 0 else 1.0 for theta in thetas))


class _PeakRss:
    """The resident set size before and at its peak while the block runs, sampled every 5 ms (Linux /proc)."""

    def __init__(self) -> None:
        self.before = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> "_PeakRss":
        self.before = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the process's peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _gene_structures(n_genes: int, rng: np.random.Generator) -> list[tuple[str, int, int, list[tuple[int, int]]]]:
    """(strand, start, end, exons in transcription order as 0-based half-open + strand intervals) per gene: the
    shared protein-coding exon model, genes _FLANK apart."""
    genes = []
    cursor = _FLANK
    for _ in range(n_genes):
        strand = "+" if rng.random() < 0.5 else "-"
        offsets = gene_exons(rng, exon_lengths(rng, coding_exon_count(rng)))
        span = offsets[-1][1]
        if strand == "+":
            exons = [(cursor + a, cursor + b) for a, b in offsets]
        else:
            exons = [(cursor + span - b, cursor + span - a) for a, b in offsets]
        genes.append((strand, cursor, cursor + span, exons))
        cursor += span + _FLANK
    return genes


def _regions_table(genes: list, contig: str) -> pd.DataFrame:
    rows = []
    for order, (strand, _, _, exons) in enumerate(genes):
        gene_id, transcript_id = f"SYNG{order + 1:05d}.1", f"SYNT{order + 1:05d}.1"
        for index, (start, end) in enumerate(exons, 1):
            sequence = contig[start:end]
            rows.append({
                "gene_order": order, "gene_id": gene_id, "gene_name": f"SYN{order + 1}", "transcript_id": transcript_id,
                "region_id": f"{gene_id}:exons:{index}", "region_index": index, "chrom": CONTIG, "start": start,
                "end": end, "strand": strand,
                "sequence": reverse_complement(sequence) if strand == "-" else sequence,
                "length": end - start, "non_acgt_count": 0,
            })
    return pd.DataFrame(rows, columns=list(REGION_DTYPES)).astype(REGION_DTYPES)
