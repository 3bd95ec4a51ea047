"""VCF → haplotypes on the conftest genome. MINUS1's exons (0-based, + strand of chr1):

    exon 1  [50, 58)  CCCANNTT  → read as AANNTGGG
    exon 2  [30, 40)  TTGGCCAATT → read as AATTGGCCAA
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest
from pysam import bcftools

from kb_assets.errors import InputError
from kb_assets.genome import (
    COUNT_DESCRIPTIONS,
    ReferenceGenome,
    build_haplotypes,
    extract_regions,
    load_annotation,
    resolve_gene_set,
)
from kb_assets.genome.haplotypes import allele_edits, apply_edits, clip_edits
from kb_assets_tests.genome.conftest import CHR1, write_vcf

EXON1, EXON2 = "ENSG00000000002.3:exons:1", "ENSG00000000002.3:exons:2"
# On exon 2: SNV G>A at 32, GG inserted after 35, AT (36-37 after the anchor A at 36) deleted.
SNV, INSERTION, DELETION = ("chr1", 33, "G", "A"), ("chr1", 36, "C", "CGG"), ("chr1", 37, "AAT", "A")


@pytest.fixture
def genome(fasta_path: Path) -> ReferenceGenome:
    return ReferenceGenome(fasta_path)


@pytest.fixture
def regions(genome: ReferenceGenome, gtf_path: Path) -> pd.DataFrame:
    annotation = load_annotation(gtf_path)
    return extract_regions(genome, annotation, resolve_gene_set(["MINUS1"], annotation), "chr1", "exons")


def _sequence_of(result, subject: str, region_id: str, haplotype: int = 0) -> str:
    return result.sequence_of(subject, region_id, haplotype)


def test_minus_strand_snv_insertion_and_deletion_give_the_hand_built_haplotype(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], [(*SNV, ["0/1"]), (*INSERTION, ["1/1"]), (*DELETION, ["0/1"])])
    result = build_haplotypes(vcf, regions, genome)
    # + strand TTGGCCAATT → TT A GCC GG A T (SNV, insertion, deletion) → reverse complement
    assert _sequence_of(result, "s1", EXON2) == "ATCCGGCTAA"
    assert _sequence_of(result, "s1", EXON1) == "AANNTGGG"
    assert result.counts["variants_read"] == 3 and result.counts["variants_applied"] == 3


def test_same_alleles_share_an_allele_and_only_carriers_are_stored(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2", "s3"], [(*SNV, ["0/1", "1/1", "0/0"])])
    result = build_haplotypes(vcf, regions, genome)
    assert result.allele_of("s1", EXON2) == result.allele_of("s2", EXON2) == 1
    assert result.allele_of("s3", EXON2) == 0 and result.allele_of("s1", EXON1) == 0
    alleles = result.alleles.set_index(["region_id", "allele"])
    assert alleles.loc[(EXON2, 1), "sequence"] == "AATTGGCTAA" and alleles.loc[(EXON2, 1), "carriers"] == 2
    assert alleles.loc[(EXON2, 0), "sequence"] == "AATTGGCCAA" and alleles.loc[(EXON2, 0), "carriers"] == 1
    assert alleles.loc[(EXON2, 1), "edits"] == [{"start": 32, "end": 33, "text": "A"}]
    assert sorted(result.alleles.sequence) == ["AANNTGGG", "AATTGGCCAA", "AATTGGCTAA"]
    # Only the two carriers of the SNV are stored; everyone else carries the reference.
    assert len(result.assignments) == 2 and set(result.assignments.subject_index) == {0, 1}
    assert result.counts["unique_sequences"] == 3 and result.counts["non_reference_haplotypes"] == 2
    assert list(result.counts) == list(COUNT_DESCRIPTIONS)


def test_phased_mode_builds_each_haplotype(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], [(*SNV, ["1|0"]), (*DELETION, ["0|1"])])
    result = build_haplotypes(vcf, regions, genome, mode="phased")
    assert _sequence_of(result, "s1", EXON2, 0) == "AATTGGCTAA"
    assert _sequence_of(result, "s1", EXON2, 1) == "ATGGCCAA"
    assert _sequence_of(result, "REF", EXON2, 1) == "AATTGGCCAA"
    assert len(result.assignments) == 2  # s1's exon 2, both haplotypes; exon 1 and REF are the reference


def test_phased_mode_rejects_unphased_heterozygous_calls_with_a_count(tmp_path, genome, regions):
    records = [(*SNV, ["0/1", "1/1", "1|0"]), (*DELETION, ["1/0", "0/1", "0|0"])]
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2", "s3"], records)
    with pytest.raises(InputError, match=r"first: s1 at chr1:33: 3 unphased heterozygous genotype\(s\) in 2 "
                                         r"subject\(s\); haplotypes.mode phased needs phased genotypes"):
        build_haplotypes(vcf, regions, genome, mode="phased")
    assert build_haplotypes(vcf, regions, genome).counts["variants_applied"] == 2


def test_ref_mismatches_over_the_limit_fail_with_the_build_message(tmp_path, genome, regions):
    # Planted: the FASTA has C at 34 and A at 36, not T and G.
    records = [(*SNV, ["0/1"]), ("chr1", 35, "T", "G", ["0/1"]), ("chr1", 37, "G", "C", ["1/1"])]
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], records)
    with pytest.raises(InputError) as caught:
        build_haplotypes(vcf, regions, genome)
    message = str(caught.value)
    assert "chr1:35 REF T, FASTA C; chr1:37 REF G, FASTA A" in message
    assert "2 of 3 REF alleles (66.7%) differ from the reference FASTA (genome.fa)" in message
    assert "probably of different genome builds" in message
    tolerant = build_haplotypes(vcf, regions, genome, max_ref_mismatch_fraction=0.7)
    assert tolerant.counts["ref_mismatches"] == 2
    assert _sequence_of(tolerant, "s1", EXON2) == "AATTGGCTAA"  # only the matching SNV applied


def test_deletion_straddling_an_exon_edge_is_clipped_and_edge_insertion_left_out(tmp_path, genome, regions):
    # Deletes 48-51 (GACC): only 50-51 lie in exon 1. The insertion after 57 sits at the exon's end.
    records = [("chr1", 48, "CGACC", "C", ["1/1"]), ("chr1", 58, "T", "TAAA", ["1/1"])]
    result = build_haplotypes(write_vcf(tmp_path / "c.vcf.gz", ["s1"], records), regions, genome)
    assert _sequence_of(result, "s1", EXON1) == "AANNTG"  # CCCANNTT → CANNTT
    assert result.counts["clipped_at_edge"] == 2
    assert result.counts["variants_applied"] == 1


def test_multiallelic_site(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2"], [("chr1", 33, "G", "A,T", ["1|2", "2|2"])])
    result = build_haplotypes(vcf, regions, genome)
    assert _sequence_of(result, "s1", EXON2) == "AATTGGCTAA"  # the smaller allele index (A) applied
    assert _sequence_of(result, "s2", EXON2) == "AATTGGCAAA"
    assert (result.counts["multiallelic"], result.counts["allele_conflicts"]) == (1, 1)
    phased = build_haplotypes(vcf, regions, genome, mode="phased")
    assert [_sequence_of(phased, "s1", EXON2, h) for h in (0, 1)] == ["AATTGGCTAA", "AATTGGCAAA"]


def test_missing_genotypes_read_as_ref_or_exclude_the_subject(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2"], [(*SNV, ["./1", "1/1"]), (*DELETION, ["./.", "0/0"])])
    as_ref = build_haplotypes(vcf, regions, genome)
    assert _sequence_of(as_ref, "s1", EXON2) == "AATTGGCTAA"
    assert as_ref.counts["missing_genotypes"] == 2
    excluding = build_haplotypes(vcf, regions, genome, missing_genotypes="exclude_subject")
    assert excluding.excluded_subjects == ["s1"]
    assert set(excluding.assignments.subject_index) == {1}
    assert (excluding.counts["subjects"], excluding.counts["subjects_excluded"]) == (1, 1)


def test_filters_and_symbolic_alleles_are_counted_not_applied(tmp_path, genome, regions):
    records = [(*SNV, ["1/1"], "LowQual"), ("chr1", 37, "A", "<DEL>", ["1/1"]), (*DELETION, ["1/1"], ".")]
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], records)
    result = build_haplotypes(vcf, regions, genome)
    assert _sequence_of(result, "s1", EXON2) == "ATGGCCAA"  # only the '.'-filter deletion
    assert (result.counts["filtered"], result.counts["symbolic_skipped"]) == (1, 1)
    relaxed = build_haplotypes(vcf, regions, genome, filters=["PASS", "LowQual"])
    assert _sequence_of(relaxed, "s1", EXON2) == "ATGGCTAA"


def test_haploid_calls_and_sample_subset(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2", "s3"], [(*SNV, ["1", "0", "0|1"])])
    result = build_haplotypes(vcf, regions, genome, mode="phased", samples=["s3", "s1"])
    assert result.subjects.subject_id.tolist() == ["s1", "s3"]
    assert [_sequence_of(result, "s1", EXON2, h) for h in (0, 1)] == ["AATTGGCTAA"] * 2
    with pytest.raises(InputError, match=r"samples: 1 not in the VCF: s9"):
        build_haplotypes(vcf, regions, genome, samples=["s1", "s9"])


def test_chromosome_without_regions_gives_empty_tables(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], [(*SNV, ["1/1"])])
    result = build_haplotypes(vcf, regions.iloc[:0], genome)
    assert result.assignments.empty and result.alleles.empty
    assert list(result.assignments.columns) == ["subject_index", "region_id", "haplotype", "allele"]
    assert (result.counts["regions"], result.counts["subjects"]) == (0, 1)


def test_sample_named_like_the_reference_subject(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "REF"], [(*SNV, ["1/1", "0/0"])])
    with pytest.raises(InputError, match="sample REF: 'REF' is reserved for the reference"):
        build_haplotypes(vcf, regions, genome)


def test_only_target_regions_are_read(tmp_path, genome, regions):
    records = [("chr1", 3, "A", "T", ["1/1"]), (*SNV, ["1/1"]), ("chr2", 5, "T", "A", ["1/1"])]
    result = build_haplotypes(write_vcf(tmp_path / "c.vcf.gz", ["s1"], records), regions, genome)
    assert result.counts["variants_read"] == 1


def test_vcf_contig_names_differing_from_the_fasta(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], [("1", 33, "G", "A", ["1/1"])], contigs={"1": 60})
    with pytest.raises(InputError, match=r"contig names: the VCF and the FASTA \(genome.fa\) name contigs "
                                         r"differently: the VCF writes '1' where the FASTA writes 'chr1'"):
        build_haplotypes(vcf, regions, genome)


def test_sample_listed_twice(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2", "s1"], [(*SNV, ["0/1", "0/0", "1/1"])])
    expected = r"#CHROM header line: sample\(s\) listed more than once: s1 in columns 10, 12"
    with pytest.raises(InputError, match=expected):
        build_haplotypes(vcf, regions, genome)


def test_truncated_bgzip_vcf(tmp_path, genome, regions):
    records = [("chr1", pos, CHR1[pos - 1].upper(), "N", ["0/1"] * 200) for pos in range(1, 61)]
    vcf = write_vcf(tmp_path / "c.vcf.gz", [f"s{i}" for i in range(200)], records)
    data = vcf.read_bytes()
    vcf.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match="c.vcf.gz: end of file: the bgzipped VCF is truncated"):
        build_haplotypes(vcf, regions, genome)


def test_plain_or_unindexed_vcf(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1"], [(*SNV, ["1/1"])])
    with pytest.raises(InputError, match="not bgzip-compressed.*Fix: compress and index it"):
        build_haplotypes(tmp_path / "c.vcf", regions, genome)
    Path(f"{vcf}.tbi").unlink()
    with pytest.raises(InputError, match=r"no index \(.tbi or .csi\).*Fix: index it: tabix -p vcf c.vcf.gz"):
        build_haplotypes(vcf, regions, genome)


def test_bcf_reads_like_the_vcf(tmp_path, genome, regions):
    vcf = write_vcf(tmp_path / "c.vcf.gz", ["s1", "s2"], [(*SNV, ["0|1", "0|0"]), (*INSERTION, ["1|1", "0|1"])])
    with pysam.VariantFile(str(vcf)) as source, pysam.VariantFile(str(tmp_path / "c.bcf"), "wb",
                                                                   header=source.header) as target:
        for record in source:
            target.write(record)
    bcftools.index(str(tmp_path / "c.bcf"))
    from_vcf = build_haplotypes(vcf, regions, genome, mode="phased")
    from_bcf = build_haplotypes(tmp_path / "c.bcf", regions, genome, mode="phased")
    pd.testing.assert_frame_equal(from_bcf.assignments, from_vcf.assignments)
    assert _sequence_of(from_bcf, "s2", EXON2, 1) == "AATTCCGGCCAA"  # TTGGCC GG AATT, reverse-complemented


def test_allele_edits_trim_shared_bases_and_clip_to_the_region():
    assert allele_edits(10, "AAT", "A") == [(11, 13, "")]
    assert allele_edits(10, "C", "CGG") == [(11, 11, "GG")]
    assert allele_edits(10, "ACG", "TCA") == [(10, 11, "T"), (12, 13, "A")]
    assert allele_edits(10, "CTG", "CA") == [(11, 12, "A"), (12, 13, "")]
    assert allele_edits(10, "AGC", "GC") == [(10, 11, "")]  # shared tail trimmed: only base 10 is deleted
    assert clip_edits([(8, 14, "")], 10, 20) == [(10, 14, "")]
    assert clip_edits([(10, 10, "GG"), (20, 20, "T"), (15, 15, "C")], 10, 20) == [(15, 15, "C")]
    assert apply_edits("ACGTACGT", 100, [(101, 101, "TT"), (101, 103, ""), (102, 103, "A")]) == (
        "ATTTACGT", [(101, 101, "TT"), (101, 103, "")])


def test_grouped_haplotypes_match_one_by_one_construction_for_many_subjects(tmp_path, genome, regions):
    """2,000 subjects, skewed-rare alleles: the grouped result equals building every subject alone."""
    rng = np.random.default_rng(7)
    sites = [(33, "G", "A"), (34, "G", "T"), (36, "C", "CGG"), (37, "AAT", "A"), (39, "T", "C"), (52, "C", "G"),
             (55, "N", "A"), (57, "T", "TA"), (48, "CGACC", "C")]
    n = 2000
    genotypes = {}
    for pos, *_ in sites:
        frequency = rng.choice([0.001, 0.01, 0.05, 0.3])
        alleles = (rng.random((n, 2)) < frequency).astype(int)
        genotypes[pos] = [f"{a}|{b}" for a, b in alleles]
    records = [("chr1", pos, ref, alt, genotypes[pos]) for pos, ref, alt in sorted(sites)]
    samples = [f"s{i}" for i in range(n)]
    result = build_haplotypes(write_vcf(tmp_path / "c.vcf.gz", samples, records), regions, genome, mode="phased")
    for subject in rng.choice(samples, 50, replace=False):
        for haplotype in (0, 1):
            for region in regions.itertuples():
                edits = sorted(
                    edit
                    for pos, ref, alt in sites
                    if genotypes[pos][int(subject[1:])].split("|")[haplotype] == "1"
                    for edit in clip_edits(allele_edits(pos - 1, ref, alt), region.start, region.end)
                )
                forward, _ = apply_edits(CHR1[region.start:region.end].upper(), region.start, edits)
                expected = forward[::-1].translate(str.maketrans("ACGTN", "TGCAN"))
                assert result.sequence_of(subject, region.region_id, haplotype) == expected
    assert result.counts["unique_sequences"] == result.alleles[["region_id", "sequence"]].drop_duplicates().shape[0]
    assert result.counts["unique_sequences"] < 2 * n


def test_phased_haplotypes_equal_bcftools_consensus(tmp_path, genome, regions):
    """The independent oracle: `bcftools consensus` applying each subject's haplotype to each region (FASTA records
    named chrom:begin-end), reverse-complemented for the minus strand, gives every sequence the builder made."""
    rng = np.random.default_rng(11)
    # SNVs, an MNV, insertions and deletions, all inside the exons (bcftools leaves edge-crossing alleles out,
    # where the builder clips them: that case is tested by hand above).
    sites = [(31, "T", "G"), (33, "G", "A"), (34, "G", "T"), (36, "C", "CGG"), (37, "AAT", "A"), (39, "TT", "CA"),
             (51, "C", "G"), (52, "C", "CTT"), (53, "CA", "C"), (57, "T", "TA")]
    n = 40
    genotypes = {pos: [f"{a}|{b}" for a, b in (rng.random((n, 2)) < rng.choice([0.05, 0.2, 0.5])).astype(int)]
                 for pos, *_ in sites}
    samples = [f"s{i}" for i in range(n)]
    vcf = write_vcf(tmp_path / "c.vcf.gz", samples, [("chr1", pos, ref, alt, genotypes[pos]) for pos, ref, alt in
                                                     sites])
    result = build_haplotypes(vcf, regions, genome, mode="phased")
    pieces = tmp_path / "regions.fa"
    pieces.write_text("".join(f">chr1:{r.start + 1}-{r.end}\n{CHR1[r.start:r.end].upper()}\n"
                              for r in regions.itertuples()))
    complement = str.maketrans("ACGTN", "TGCAN")
    for subject in samples:
        for haplotype in (1, 2):
            fasta = bcftools.consensus("-f", str(pieces), "-s", subject, "-H", str(haplotype), str(vcf))
            consensus = {name: body.replace("\n", "") for name, body in
                         (record.split("\n", 1) for record in fasta.split(">")[1:])}
            for region in regions.itertuples():
                expected = consensus[f"chr1:{region.start + 1}-{region.end}"]
                if region.strand == "-":
                    expected = expected.translate(complement)[::-1]
                assert result.sequence_of(subject, region.region_id, haplotype - 1) == expected, (subject, haplotype)
