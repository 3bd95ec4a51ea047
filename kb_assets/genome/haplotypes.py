"""Subject haplotypes: a cohort VCF/BCF's alleles applied to the reference regions, each distinct allele once.

The VCF (bgzipped and indexed) is read region by region with cyvcf2, so only target regions are decoded.
Genotypes are handled as numpy arrays over all subjects at once; subjects are grouped by the alleles they carry
in a region, so each distinct haplotype sequence is built (and later embedded) once, however many carry it.
What is stored follows what subjects do not share: per region its distinct alleles (0 = the reference), and only the
subject × region × haplotype units that carry a non-reference allele.

Rules:
- Alleles are applied on the genome's + strand and the result is reverse-complemented for minus-strand regions,
  like the reference sequence. An allele is trimmed of the bases it shares with REF, then applied base by base
  (substitutions), as a deletion or as an insertion; the pieces outside the region are clipped away
  (`clipped_at_edge`). An insertion exactly at a region edge lies outside it.
- A region allele is its list of applied edits (+ strand, 0-based), kept with it: embedding tiles anchored to
  reference coordinates are cut from it. A deletion may remove a whole region: its allele is the empty sequence.
- `alt_if_present`: one sequence per subject, every ALT allele of its genotype applied (a 1/2 call at one site
  applies the smaller allele index: `allele_conflicts`). `phased`: two haplotypes per subject from phased
  genotypes; an unphased heterozygous call is an error. A haploid call stands for both haplotypes.
- Missing genotypes: `ref` reads a missing allele as REF; `exclude_subject` drops every subject with a missing
  call in any region read (flagged `excluded` in `HaplotypeResult.subjects`).
- FILTER: a record is used when each of its filters is in `filters`; '.' (no filters run) counts as PASS.
- Symbolic alleles (<DEL>, <INS:ME>, breakends) and '*' are not applied (`symbolic_skipped`).
- REF alleles are checked against the FASTA; a mismatching record is not applied (`ref_mismatches`), and more
  than `max_ref_mismatch_fraction` of them stops the run: the VCF and FASTA are then probably different builds.
- Two alleles that would change the same bases of one haplotype: the first (by position) wins
  (`overlapping_alleles_skipped`, counted once per distinct haplotype built).
- The reference is subject `REF`: allele 0 of every region, as is every subject's haplotype not listed.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cyvcf2
import numpy as np
import pandas as pd

from kb_assets.errors import InputError
from kb_assets.genome.bgzf import check_bgzf, is_gzip
from kb_assets.genome.contigs import raise_contig_mismatches, vcf_mismatches
from kb_assets.genome.fasta import ReferenceGenome
from kb_assets.genome.sequence import reverse_complement

HAPLOTYPE_MODES = ("alt_if_present", "phased")
MISSING_GENOTYPE_POLICIES = ("ref", "exclude_subject")
REFERENCE_SUBJECT = "REF"
COUNT_DESCRIPTIONS = {
    "variants_read": "distinct VCF records overlapping a region",
    "variants_applied": "distinct records with an applied allele carried by at least one subject",
    "multiallelic": "records with more than one ALT allele",
    "allele_conflicts": "alt_if_present: calls with two different ALT alleles (the smaller index applied)",
    "missing_genotypes": "missing calls (subject × record) in used records",
    "filtered": "records whose FILTER is not in the allowed filters",
    "symbolic_skipped": "symbolic or '*' ALT alleles, not applied",
    "ref_mismatches": "records whose REF differs from the FASTA, not applied",
    "clipped_at_edge": "(region, record) pairs with an allele partly or wholly outside the region",
    "overlapping_alleles_skipped": "alleles overlapping an earlier allele of the same built haplotype",
    "unphased_heterozygous": "phased mode: unphased heterozygous calls",
    "subjects": "subjects in the result (REF not included)",
    "subjects_excluded": "subjects dropped for missing genotypes",
    "regions": "regions",
    "unique_sequences": "distinct region sequences, reference sequences included",
    "non_reference_haplotypes": "subject × region × haplotype units that carry a non-reference allele (stored)",
}
_SEQUENCE_ALLELE = re.compile(r"[ACGTN]+")
_SHOWN = 3  # examples quoted in an error

Edit = tuple[int, int, str]  # replace genome[start:end] (0-based, + strand) by the text; start == end inserts
Region = Any  # one row of the regions table, from DataFrame.itertuples()


@dataclass(frozen=True)
class HaplotypeResult:
    """Each region's distinct alleles and, sparsely, which subjects carry which (the reference everywhere else).

    A subject's haplotype of a region is allele 0 (the reference sequence) unless `assignments` lists it: at cohort
    scale most subjects carry the reference of most regions, so only the exceptions are stored.
    """

    subjects: pd.DataFrame  # subject_index (int32, VCF order), subject_id, excluded (bool)
    alleles: pd.DataFrame  # region_id, allele (int32; 0 = reference), sequence, length, carriers, edits
    assignments: pd.DataFrame  # subject_index, region_id, haplotype (int8), allele (int32 ≥ 1): kept subjects only
    counts: dict[str, int]  # the keys of COUNT_DESCRIPTIONS, for materialization metadata
    ploidy: int  # haplotypes per subject: 1 (alt_if_present) or 2 (phased)

    @property
    def excluded_subjects(self) -> list[str]:
        """Subjects dropped by missing_genotypes="exclude_subject"."""
        return self.subjects.loc[self.subjects["excluded"], "subject_id"].tolist()

    def allele_of(self, subject_id: str, region_id: str, haplotype: int = 0) -> int:
        """The allele a subject carries on one haplotype of a region (0: the reference)."""
        index = self.subjects.set_index("subject_id").loc[subject_id, "subject_index"]
        rows = self.assignments
        found = rows.loc[(rows["subject_index"] == index) & (rows["region_id"] == region_id)
                         & (rows["haplotype"] == haplotype), "allele"]
        return int(found.iloc[0]) if len(found) else 0

    def sequence_of(self, subject_id: str, region_id: str, haplotype: int = 0) -> str:
        """A subject's sequence of a region on one haplotype (REF: the reference), transcribed strand."""
        allele = 0 if subject_id == REFERENCE_SUBJECT else self.allele_of(subject_id, region_id, haplotype)
        alleles = self.alleles
        return alleles.loc[(alleles["region_id"] == region_id) & (alleles["allele"] == allele), "sequence"].iloc[0]


def build_haplotypes(
    vcf_path: str | os.PathLike,
    regions: pd.DataFrame,
    genome: ReferenceGenome,
    mode: str = "alt_if_present",
    missing_genotypes: str = "ref",
    filters: list[str] | tuple[str, ...] = ("PASS",),
    max_ref_mismatch_fraction: float = 0.01,
    samples: list[str] | None = None,
) -> HaplotypeResult:
    """Apply each subject's alleles to `regions` (output of `extract_regions`); see the module doc for the rules.

    `samples` restricts the subjects (default: every VCF sample); subjects keep the VCF's sample order.
    """
    if mode not in HAPLOTYPE_MODES:
        raise ValueError(f"mode must be one of {HAPLOTYPE_MODES}, got {mode!r}")
    if missing_genotypes not in MISSING_GENOTYPE_POLICIES:
        raise ValueError(f"missing_genotypes must be one of {MISSING_GENOTYPE_POLICIES}, got {missing_genotypes!r}")
    path = Path(vcf_path)
    subjects = _select_samples(path, _check_vcf_file(path), samples)
    vcf = cyvcf2.VCF(str(path), samples=subjects, lazy=True)
    _check_vcf_contigs(path, vcf, genome, regions)
    builder = _Builder(vcf, genome, len(subjects), mode, missing_genotypes, set(filters))
    with warnings.catch_warnings():
        # cyvcf2 warns for every query on a contig that has no records; such a region simply has no variants.
        warnings.filterwarnings("ignore", message="no intervals found", category=UserWarning)
        for region in regions.itertuples():
            builder.region(region)
    builder.check(path, max_ref_mismatch_fraction)
    return builder.result(regions, subjects)


def reference_haplotypes(regions: pd.DataFrame) -> HaplotypeResult:
    """The reference alone, for a recipe without a cohort VCF: every region's allele 0, no subject."""
    return _Builder(None, None, 0, HAPLOTYPE_MODES[0], "ref", set()).result(regions, [])


class _Builder:
    """Reads regions one at a time; keeps each region's distinct alleles, the sparse carriers, the counters and the
    cohort-wide flags."""

    def __init__(
        self, vcf: cyvcf2.VCF | None, genome: ReferenceGenome | None, n_subjects: int, mode: str, missing: str,
        filters: set[str],
    ):
        self.vcf, self.genome, self.mode, self.missing, self.filters = vcf, genome, mode, missing, filters
        self.ploidy = 2 if mode == "phased" else 1  # sequences per subject and region
        self.n_units = n_subjects * self.ploidy
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNT_DESCRIPTIONS, 0))
        # A record read again by an overlapping region is counted once.
        self.read: set[tuple] = set()
        self.genotyped: set[tuple] = set()
        self.applied: set[tuple] = set()
        self.checked = 0
        self.mismatch_examples: list[str] = []
        self.unphased = np.zeros(n_subjects, dtype=bool)
        self.unphased_example = ""
        self.excluded = np.zeros(n_subjects, dtype=bool)
        # Per region id: the distinct non-reference alleles as (applied edits) → (provisional number, sequence), and
        # the carrying units with their provisional allele numbers.
        self.alleles: dict[str, dict[tuple[Edit, ...], tuple[int, str]]] = {}
        self.carriers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rng = np.random.default_rng(0)

    def region(self, region: Region) -> None:
        """Read one region's records and record which units carry which allele."""
        variants: list[tuple[list[list[Edit] | None], np.ndarray, np.ndarray]] = []
        for record in self.vcf(f"{region.chrom}:{region.start + 1}-{region.end}"):
            edits = self._edits(record, region)
            if edits is None:
                continue
            carriers, carried = self._carriers(record, edits)
            if len(carriers):
                self.applied.add(_key(record))
                variants.append((edits, carriers, carried))
        if variants:
            self._build(region, variants)
    def _edits(self, record: cyvcf2.Variant, region: Region) -> list[list[Edit] | None] | None:
        """Per allele index (0 = REF) its edits clipped to the region, None where not applied; None if unused."""
        key = _key(record)
        first_read = key not in self.read
        self.read.add(key)
        if first_read:
            self.counts["variants_read"] += 1
            self.counts["multiallelic"] += len(record.ALT) > 1
        if not all(name in self.filters for name in record.FILTERS or ["PASS"]):
            self.counts["filtered"] += first_read
            return None
        ref = record.REF.upper()
        end = record.start + len(ref)
        found = self.genome.fetch(record.CHROM, record.start, end) if end <= self.genome.length(record.CHROM) else ""
        self.checked += first_read
        if found != ref:
            if first_read:
                self.counts["ref_mismatches"] += 1
                if len(self.mismatch_examples) < _SHOWN:
                    found = found or "(past the contig end)"
                    self.mismatch_examples.append(f"{record.CHROM}:{record.POS} REF {ref}, FASTA {found}")
            return None
        edits: list[list[Edit] | None] = [None]
        clipped = False
        for alt in record.ALT:
            if not _SEQUENCE_ALLELE.fullmatch(alt.upper()):
                self.counts["symbolic_skipped"] += first_read
                edits.append(None)
                continue
            pieces = allele_edits(record.start, ref, alt.upper())
            inside = clip_edits(pieces, region.start, region.end)
            clipped |= inside != pieces
            edits.append(inside or None)
        self.counts["clipped_at_edge"] += clipped
        return edits if any(edits) else None

    def _carriers(self, record: cyvcf2.Variant, edits: list[list[Edit] | None]) -> tuple[np.ndarray, np.ndarray]:
        """The units carrying an applied allele of this record, and that allele's index."""
        key = _key(record)
        first_genotyped = key not in self.genotyped
        self.genotyped.add(key)
        genotypes = record.genotype.array()  # (subjects, alleles + phased flag), int16
        first = genotypes[:, 0]
        second = genotypes[:, 1] if genotypes.shape[1] > 2 else first
        second = np.where(second == -2, first, second)  # -2 pads a haploid call: one allele for both
        missing = (first < 0) | (second < 0)
        if missing.any():
            self.counts["missing_genotypes"] += int(missing.sum()) * first_genotyped
            if self.missing == "exclude_subject":
                self.excluded |= missing
            first, second = np.maximum(first, 0), np.maximum(second, 0)
        if self.mode == "phased":
            unphased = (genotypes[:, -1] == 0) & (first != second) & ~missing
            if unphased.any() and first_genotyped:
                if not self.unphased_example:
                    subject = self.vcf.samples[int(np.flatnonzero(unphased)[0])]
                    self.unphased_example = f"{subject} at {record.CHROM}:{record.POS}"
                self.counts["unphased_heterozygous"] += int(unphased.sum())
                self.unphased |= unphased
        applied = np.array([allele is not None for allele in edits])
        candidates = np.flatnonzero((first > 0) | (second > 0))
        first = np.where(applied[first[candidates]], first[candidates], 0)
        second = np.where(applied[second[candidates]], second[candidates], 0)
        if self.mode == "phased":
            # Unit 2i is subject i's first haplotype, 2i + 1 its second; carriers come out sorted.
            units = np.stack([2 * candidates, 2 * candidates + 1], axis=1).ravel()
            alleles = np.stack([first, second], axis=1).ravel()
            carrying = alleles > 0
            return units[carrying], alleles[carrying]
        both = (first > 0) & (second > 0)
        self.counts["allele_conflicts"] += int((both & (first != second)).sum()) * first_genotyped
        chosen = np.where(both, np.minimum(first, second), np.maximum(first, second))
        carrying = chosen > 0
        return candidates[carrying], chosen[carrying]

    def _build(self, region: Region, variants: list[tuple[list[list[Edit] | None], np.ndarray, np.ndarray]]) -> None:
        """Group the carrying units by the alleles they carry and build each distinct sequence once.

        A unit's allele pattern is summed from random 128-bit keys, one per (variant, allele), wrapping on
        overflow: units share a sum exactly when they carry the same alleles (a collision is ~2^-128 likely).
        """
        max_allele = max(len(edits) for edits, _, _ in variants)
        keys = self.rng.integers(0, np.iinfo(np.uint64).max, size=(len(variants), max_allele, 2), dtype=np.uint64,
                                 endpoint=True)
        pattern = np.zeros((self.n_units, 2), dtype=np.uint64)
        for index, (_, carriers, carried) in enumerate(variants):
            pattern[carriers] += keys[index, carried]  # carriers are unique within a variant
        touched = np.flatnonzero(pattern.any(axis=1))
        _, first_of_group, group = np.unique(pattern[touched], axis=0, return_index=True, return_inverse=True)
        representatives = touched[first_of_group]
        # allele_at[v, g]: the allele of variant v that group g carries (0 = none).
        allele_at = np.zeros((len(variants), len(representatives)), dtype=np.int16)
        for index, (_, carriers, carried) in enumerate(variants):
            at = np.minimum(np.searchsorted(carriers, representatives), len(carriers) - 1)
            allele_at[index] = np.where(carriers[at] == representatives, carried[at], 0)
        forward = reverse_complement(region.sequence) if region.strand == "-" else region.sequence
        known = self.alleles.setdefault(region.region_id, {})
        group_alleles = np.empty(len(representatives), dtype=np.int32)
        for position in range(len(representatives)):
            carried_by_group = np.flatnonzero(allele_at[:, position])
            edits = sorted(
                edit for index in carried_by_group for edit in variants[index][0][allele_at[index, position]]
            )
            sequence, applied = apply_edits(forward, region.start, edits)
            self.counts["overlapping_alleles_skipped"] += len(edits) - len(applied)
            if not applied:
                group_alleles[position] = 0
                continue
            # An allele is its applied edits (not only its sequence): tiles anchored to the reference need them.
            key = tuple(applied)
            if key not in known:
                known[key] = (len(known) + 1, reverse_complement(sequence) if region.strand == "-" else sequence)
            group_alleles[position] = known[key][0]
        unit_alleles = group_alleles[group.ravel()]
        carrying = unit_alleles > 0
        self.carriers[region.region_id] = (touched[carrying], unit_alleles[carrying])

    def check(self, path: Path, max_ref_mismatch_fraction: float) -> None:
        """Raise the cohort-wide errors found while reading: REF mismatches over the limit, unphased calls."""
        mismatches = self.counts["ref_mismatches"]
        if self.checked and mismatches / self.checked > max_ref_mismatch_fraction:
            raise InputError(
                path,
                "; ".join(self.mismatch_examples) + (" …" if mismatches > _SHOWN else ""),
                f"{mismatches} of {self.checked} REF alleles ({mismatches / self.checked:.1%}) differ from the "
                f"reference FASTA ({self.genome.path.name}), more than the {max_ref_mismatch_fraction:.1%} allowed: "
                "the VCF and the FASTA are probably of different genome builds",
                "use a VCF called or lifted over to the FASTA's build (e.g. GRCh38), or raise "
                "haplotypes.max_ref_mismatch_fraction to accept skipping the mismatching records",
            )
        if self.unphased.any():
            raise InputError(
                path,
                f"first: {self.unphased_example}",
                f"{self.counts['unphased_heterozygous']} unphased heterozygous genotype(s) in "
                f"{int(self.unphased.sum())} subject(s); haplotypes.mode phased needs phased genotypes (0|1)",
                "phase the VCF (e.g. with SHAPEIT5, Eagle or Beagle), or set haplotypes.mode: alt_if_present",
            )

    def result(self, regions: pd.DataFrame, subjects: list[str]) -> HaplotypeResult:
        """Assemble the tables. Alleles are numbered per region by how many kept units carry them (most first; ties
        by sequence), so the numbering depends on the data only."""
        kept_units = np.repeat(~self.excluded, self.ploidy)
        allele_rows, assignment_parts = [], []
        for region in regions.itertuples():
            allele_rows.append((region.region_id, 0, region.sequence, len(region.sequence), ()))
            units, provisional = self.carriers.get(region.region_id, (np.empty(0, np.int64), np.empty(0, np.int32)))
            keep = kept_units[units]
            units, provisional = units[keep], provisional[keep]
            known = self.alleles.get(region.region_id, {})
            counts = np.bincount(provisional, minlength=len(known) + 1)
            present = [(key, number, sequence) for key, (number, sequence) in known.items() if counts[number]]
            present.sort(key=lambda item: (-counts[item[1]], item[2]))
            renumber = np.zeros(len(known) + 1, dtype=np.int32)
            for final, (key, number, sequence) in enumerate(present, start=1):
                renumber[number] = final
                allele_rows.append((region.region_id, final, sequence, len(sequence), key))
            if len(units):
                assignment_parts.append((region.region_id, units, renumber[provisional]))
        region_ids = regions["region_id"].astype(str).tolist()
        units = np.concatenate([u for _, u, _ in assignment_parts]) if assignment_parts else np.empty(0, np.int64)
        assignments = pd.DataFrame({
            "subject_index": (units // self.ploidy).astype(np.int32),
            "region_id": pd.Categorical(
                np.repeat([r for r, _, _ in assignment_parts], [len(u) for _, u, _ in assignment_parts]),
                categories=region_ids),
            "haplotype": (units % self.ploidy).astype(np.int8),
            "allele": np.concatenate([a for _, _, a in assignment_parts]).astype(np.int32)
            if assignment_parts else np.empty(0, np.int32),
        })
        carriers = assignments.groupby(["region_id", "allele"], observed=True).size()
        n_kept_units = int(kept_units.sum())
        alleles = pd.DataFrame(allele_rows, columns=["region_id", "allele", "sequence", "length", "edits"])
        alleles["allele"] = alleles["allele"].astype(np.int32)
        alleles["length"] = alleles["length"].astype(np.int64)
        per_region = assignments.groupby("region_id", observed=True).size().reindex(region_ids, fill_value=0)
        alleles["carriers"] = [
            n_kept_units - int(per_region[r]) if a == 0 else int(carriers[(r, a)])
            for r, a in zip(alleles["region_id"], alleles["allele"])
        ]
        # A list per row, also with no row (a chromosome without gene-set regions): object, not float64.
        alleles["edits"] = pd.Series([[{"start": s, "end": e, "text": t} for s, e, t in key]
                                      for key in alleles["edits"]], index=alleles.index, dtype=object)
        subject_table = pd.DataFrame({
            "subject_index": np.arange(len(subjects), dtype=np.int32),
            "subject_id": pd.Series(subjects, dtype="str"),
            "excluded": self.excluded.copy(),
        })
        counts = {name: int(value) for name, value in self.counts.items()}
        counts.update(
            variants_applied=len(self.applied),
            subjects=len(subjects) - int(self.excluded.sum()),
            subjects_excluded=int(self.excluded.sum()),
            regions=len(regions),
            unique_sequences=int(alleles[["region_id", "sequence"]].drop_duplicates().shape[0]),
            non_reference_haplotypes=len(assignments),
        )
        return HaplotypeResult(subject_table, alleles, assignments, counts, self.ploidy)


def allele_edits(position: int, ref: str, alt: str) -> list[Edit]:
    """The edits that turn REF at `position` (0-based) into ALT: bases shared at either end are trimmed first."""
    shared = len(os.path.commonprefix([ref, alt]))
    ref, alt, position = ref[shared:], alt[shared:], position + shared
    tail = len(os.path.commonprefix([ref[::-1], alt[::-1]]))
    ref, alt = ref[: len(ref) - tail], alt[: len(alt) - tail]
    paired = min(len(ref), len(alt))
    edits = [(position + i, position + i + 1, alt[i]) for i in range(paired) if ref[i] != alt[i]]
    if len(ref) > paired:
        edits.append((position + paired, position + len(ref), ""))
    if len(alt) > paired:
        edits.append((position + paired, position + paired, alt[paired:]))
    return edits


def clip_edits(edits: list[Edit], start: int, end: int) -> list[Edit]:
    """The parts of the edits inside [start, end); an insertion must fall strictly inside."""
    inside = []
    for edit_start, edit_end, text in edits:
        if edit_start == edit_end:
            if start < edit_start < end:
                inside.append((edit_start, edit_end, text))
        elif edit_start < end and edit_end > start:
            # Substitutions are single bases and deletions have no text, so only deletions are ever cut.
            inside.append((max(edit_start, start), min(edit_end, end), text))
    return inside


def apply_edits(forward: str, start: int, edits: list[Edit]) -> tuple[str, list[Edit]]:
    """`forward` (the + strand sequence from `start`) with the sorted edits applied, and the edits applied: one that
    overlaps an earlier one is skipped."""
    pieces, cursor, applied = [], start, []
    for edit_start, edit_end, text in edits:
        if edit_start < cursor:
            continue
        pieces.append(forward[cursor - start : edit_start - start])
        pieces.append(text)
        cursor = edit_end
        applied.append((edit_start, edit_end, text))
    pieces.append(forward[cursor - start :])
    return "".join(pieces), applied


def _key(record: cyvcf2.Variant) -> tuple:
    return record.CHROM, record.start, record.REF, tuple(record.ALT)


def vcf_samples(path: str | os.PathLike) -> list[str]:
    """The sample names of a bgzipped, indexed VCF/BCF (each once), after the same checks build_haplotypes makes."""
    return _check_vcf_file(Path(path))


def _check_vcf_file(path: Path) -> list[str]:
    """Check the VCF/BCF can be read by region and return its header's sample names (each once)."""
    if not path.is_file():
        raise InputError(path, None, "VCF file not found", "point inputs.vcf at an existing bgzipped VCF or BCF")
    if not is_gzip(path):
        raise InputError(
            path, None, "the VCF is not bgzip-compressed, so it cannot be read by region",
            f"compress and index it: bgzip {path.name} && tabix -p vcf {path.name}.gz",
        )
    check_bgzf(path, "VCF")
    if not any(Path(f"{path}{suffix}").is_file() for suffix in (".tbi", ".csi")):
        raise InputError(
            path, None, "the VCF has no index (.tbi or .csi) next to it",
            f"index it: tabix -p vcf {path.name} (or bcftools index {path.name})",
        )
    samples = _header_samples(path)
    positions: dict[str, list[int]] = {}
    for column, sample in enumerate(samples, 10):
        positions.setdefault(sample, []).append(column)
    repeated = {sample: columns for sample, columns in positions.items() if len(columns) > 1}
    if repeated:
        listed = "; ".join(f"{sample} in columns {', '.join(map(str, cols))}" for sample, cols in repeated.items())
        raise InputError(path, "#CHROM header line", f"sample(s) listed more than once: {listed}",
                         "give every sample one column (e.g. bcftools reheader with unique names)")
    return samples


def _header_samples(path: Path) -> list[str]:
    """Sample names from the #CHROM line, read directly: htslib refuses a header with a repeated sample."""
    with gzip.open(path, "rb") as handle:
        if handle.peek(3)[:3] == b"BCF":
            handle.read(5)
            (length,) = struct.unpack("<I", handle.read(4))
            lines = handle.read(length).rstrip(b"\0").split(b"\n")
        else:
            lines = []
            for line in handle:
                lines.append(line.rstrip(b"\r\n"))
                if not line.startswith(b"##"):
                    break
    chrom_line = next((line for line in lines if line.startswith(b"#CHROM")), None)
    if chrom_line is None:
        raise InputError(path, "header", "not a VCF: no #CHROM header line", "point inputs.vcf at a VCF or BCF")
    return chrom_line.decode().split("\t")[9:]


def _select_samples(path: Path, header_samples: list[str], samples: list[str] | None) -> list[str]:
    if REFERENCE_SUBJECT in header_samples:
        raise InputError(path, f"sample {REFERENCE_SUBJECT}", f"'{REFERENCE_SUBJECT}' is reserved for the reference",
                         "rename that sample (bcftools reheader --samples)")
    if samples is None:
        selected = header_samples
    elif not samples:
        raise InputError(path, "samples", "the list of subjects to read is empty", "name at least one VCF sample")
    else:
        repeated = sorted({sample for sample in samples if samples.count(sample) > 1})
        unknown = [sample for sample in samples if sample not in set(header_samples)]
        if repeated or unknown:
            problem = "; ".join(part for part in (
                f"requested more than once: {', '.join(repeated[:10])}" if repeated else "",
                f"{len(unknown)} not in the VCF: {', '.join(unknown[:10])}" if unknown else "",
            ) if part)
            raise InputError(path, "samples", problem, "request each subject once, by its VCF sample name")
        wanted = set(samples)
        selected = [sample for sample in header_samples if sample in wanted]
    if not selected:
        raise InputError(path, "#CHROM header line", "the VCF has no samples", "use a VCF with genotype columns")
    return selected


def _check_vcf_contigs(path: Path, vcf: cyvcf2.VCF, genome: ReferenceGenome, regions: pd.DataFrame) -> None:
    raise_contig_mismatches(genome, vcf_mismatches(genome, path, list(vcf.seqnames), list(regions.chrom.unique())))
