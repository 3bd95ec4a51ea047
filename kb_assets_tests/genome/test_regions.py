from pathlib import Path

import pandas as pd
import pysam
import pytest

from kb_assets.errors import InputError
from kb_assets.genome import (
    REGION_DTYPES,
    ReferenceGenome,
    extract_regions,
    load_annotation,
    resolve_gene_set,
    reverse_complement,
)
from kb_assets_tests.genome.conftest import CHR1, CHR2, CHR3, write_fasta


@pytest.fixture
def inputs(fasta_path: Path, gtf_path: Path):
    annotation = load_annotation(gtf_path)
    genes = resolve_gene_set(["MINUS1", "PLUS1", "NCGENE"], annotation)
    return ReferenceGenome(fasta_path), annotation, genes


def _rows(regions: pd.DataFrame) -> list[list]:
    return regions[["gene_name", "region_index", "start", "end", "strand", "sequence"]].values.tolist()


def test_minus_strand_exon_is_the_reverse_complement_of_the_genome_slice(inputs):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr1", "exons")
    exon2 = regions[regions.region_id == "ENSG00000000002.3:exons:2"].iloc[0]
    assert genome.fetch("chr1", 30, 40) == "TTGGCCAATT"
    assert exon2.sequence == "AATTGGCCAA" == reverse_complement("TTGGCCAATT")


def test_exons_of_the_chosen_transcript_in_gene_set_and_transcription_order(inputs):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr1", "exons")
    assert _rows(regions) == [
        ["MINUS1", 1, 50, 58, "-", "AANNTGGG"],
        ["MINUS1", 2, 30, 40, "-", "AATTGGCCAA"],
        ["PLUS1", 1, 10, 15, "+", "GGGGG"],
        ["PLUS1", 2, 20, 28, "+", "ACGTACGT"],
        ["PLUS1", 3, 40, 50, "+", "GATCGATCGA"],  # soft-masked in the FASTA
    ]
    assert regions.gene_order.tolist() == [0, 0, 1, 1, 1]
    assert regions.transcript_id.tolist() == ["ENST00000000021.1"] * 2 + ["ENST00000000011.2"] * 3
    assert regions.region_id.tolist()[:3] == [
        "ENSG00000000002.3:exons:1", "ENSG00000000002.3:exons:2", "ENSG00000000001.5:exons:1",
    ]
    assert regions.length.tolist() == [8, 10, 5, 8, 10]
    assert regions.non_acgt_count.tolist() == [2, 0, 0, 0, 0]
    assert regions.attrs["skipped"] == {}


def test_gene_body(inputs):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr1", "gene_body")
    assert _rows(regions) == [
        ["MINUS1", 1, 25, 58, "-", "AANNTGGGTCGATCGATCAATTGGCCAAGTACG"],
        ["PLUS1", 1, 10, 50, "+", "GGGGGTTTTTACGTACGTACTTGGCCAATTGATCGATCGA"],
    ]
    assert regions.region_id.tolist() == ["ENSG00000000002.3:gene_body:1", "ENSG00000000001.5:gene_body:1"]


def test_cds_pieces_keep_exon_numbers(inputs):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr1", "cds")
    assert _rows(regions) == [
        ["MINUS1", 1, 50, 54, "-", "TGGG"],
        ["MINUS1", 2, 32, 40, "-", "AATTGGCC"],
        ["PLUS1", 1, 12, 15, "+", "GGG"],
        ["PLUS1", 2, 20, 28, "+", "ACGTACGT"],
        ["PLUS1", 3, 40, 45, "+", "GATCG"],
    ]


def test_gene_without_cds_is_skipped_and_reported(inputs):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr2", "cds")
    assert regions.empty
    assert regions.attrs["skipped"] == {"ENSG00000000003.1": "transcript has no CDS"}
    assert len(extract_regions(genome, annotation, genes, "chr2", "exons")) == 1


@pytest.mark.parametrize(
    "upstream, downstream, expected",
    [
        (5, 3, ["PLUS1", 1, 5, 13, "+", "CCCCCGGG"]),  # TSS at 10: [10-5, 10+3)
        (20, 3, ["PLUS1", 1, 0, 13, "+", "AAAAACCCCCGGG"]),  # clipped at the contig start
        (1, 3, ["MINUS1", 1, 55, 59, "-", "AAAN"]),  # TSS at 57, upstream to its right: [57-2, 57+1+1)
        (20, 3, ["MINUS1", 1, 55, 60, "-", "CAAAN"]),  # clipped at the contig end (60)
    ],
)
def test_promoter_is_strand_aware_and_clipped(inputs, upstream, downstream, expected):
    genome, annotation, genes = inputs
    regions = extract_regions(genome, annotation, genes, "chr1", "promoter", upstream, downstream)
    assert [row for row in _rows(regions) if row[0] == expected[0]] == [expected]


def test_minus_strand_promoter_reads_upstream_first(inputs):
    genome, annotation, genes = inputs
    minus = extract_regions(genome, annotation, genes, "chr1", "promoter", 2, 4).iloc[0]
    # TSS 57: upstream 58-59, downstream 54-57 → [54, 60), read 3'→5' on the genome's + strand
    assert genome.fetch("chr1", 54, 60) == "NNTTTG"
    assert (minus.gene_name, minus.start, minus.end, minus.sequence) == ("MINUS1", 54, 60, "CAAANN")


def test_chromosome_without_gene_set_genes_gives_typed_empty_frame(inputs):
    genome, annotation, genes = inputs
    for mode in ("exons", "gene_body", "cds", "promoter"):
        regions = extract_regions(genome, annotation, genes, "chr3", mode)
        assert regions.empty
        assert regions.dtypes.astype(str).to_dict() == REGION_DTYPES


def test_region_past_contig_end(tmp_path: Path, gtf_path: Path):
    short = ReferenceGenome(write_fasta(tmp_path / "short.fa", {"chr1": CHR1[:45], "chr2": CHR2}))
    annotation = load_annotation(gtf_path)
    genes = resolve_gene_set(["PLUS1"], annotation)
    with pytest.raises(InputError, match=r"short.fa: PLUS1 chr1:40-50: 1 region\(s\) of annotation.gtf run past "
                                         r"the end of chr1 \(length 45\)"):
        extract_regions(short, annotation, genes, "chr1", "exons")


def test_bgzipped_reference_gives_the_same_regions(inputs, tmp_path: Path):
    genome, annotation, genes = inputs
    plain = write_fasta(tmp_path / "copy.fa", {"chr1": CHR1, "chr2": CHR2, "chr3": CHR3})
    pysam.tabix_compress(str(plain), str(tmp_path / "copy.fa.gz"))
    bgzf = ReferenceGenome(tmp_path / "copy.fa.gz")
    for mode in ("exons", "gene_body", "promoter"):
        pd.testing.assert_frame_equal(
            extract_regions(bgzf, annotation, genes, "chr1", mode),
            extract_regions(genome, annotation, genes, "chr1", mode),
        )
