import gzip
from pathlib import Path

import pytest

from kb_assets.errors import InputError
from kb_assets.genome import load_annotation
from kb_assets_tests.genome.conftest import MINUS1, PLUS1, Gene, Transcript, gene_lines, gtf_line, write_gtf


def test_genes_are_zero_based_with_version_stripped_ids(gtf_path: Path):
    genes = load_annotation(gtf_path).genes.set_index("gene_name")
    assert genes.loc["PLUS1", ["gene_id", "gene_id_base", "chrom", "start", "end", "strand"]].tolist() == [
        "ENSG00000000001.5", "ENSG00000000001", "chr1", 10, 50, "+",
    ]
    assert genes.loc["MINUS1", ["start", "end", "strand"]].tolist() == [25, 58, "-"]
    assert genes.loc["NCGENE", "gene_type"] == "lncRNA"


def test_gencode_version_from_header_else_file_name(gtf_path: Path, tmp_path: Path):
    assert load_annotation(gtf_path).version == "GENCODE v46"
    bare = write_gtf(tmp_path / "Homo_sapiens.GRCh38.112.gtf", gene_lines(PLUS1), header=())
    assert load_annotation(bare).version == "Homo_sapiens.GRCh38.112.gtf"


def test_transcript_tags_flags_and_lengths(gtf_path: Path):
    transcripts = load_annotation(gtf_path).transcripts.set_index("transcript_id")
    canonical = transcripts.loc["ENST00000000011.2"]
    assert canonical.tags == "basic;Ensembl_canonical"
    assert (canonical.is_ensembl_canonical, canonical.is_mane_select) == (True, False)
    assert (canonical.cds_length, canonical.exon_length) == (3 + 8 + 5, 5 + 8 + 10)
    other = transcripts.loc["ENST00000000012.1"]
    assert (other.is_ensembl_canonical, other.cds_length, other.exon_length) == (False, 0, 20)


def test_cds_rows_keep_their_exon_numbers(gtf_path: Path):
    cds = load_annotation(gtf_path).cds
    minus = cds[cds.transcript_id == "ENST00000000021.1"]
    assert minus[["exon_number", "start", "end"]].values.tolist() == [[1, 50, 54], [2, 32, 40]]


def test_exons_out_of_file_order_are_sorted(tmp_path: Path):
    lines = gene_lines(PLUS1)
    exon_lines = [line for line in lines if "\texon\t" in line and "ENST00000000011.2" in line]
    shuffled = [line for line in lines if line not in exon_lines] + exon_lines[::-1]
    exons = load_annotation(write_gtf(tmp_path / "shuffled.gtf", shuffled)).exons
    chosen = exons[exons.transcript_id == "ENST00000000011.2"]
    assert chosen[["exon_number", "start", "end"]].values.tolist() == [[1, 10, 15], [2, 20, 28], [3, 40, 50]]


def test_missing_exon_number_is_counted_in_transcription_order(tmp_path: Path):
    attrs = [("gene_id", "G.1"), ("transcript_id", "T.1"), ("gene_name", "G")]
    lines = [gtf_line("chr1", "exon", start, end, "-", attrs) for start, end in ((11, 15), (41, 50), (21, 28))]
    exons = load_annotation(write_gtf(tmp_path / "unnumbered.gtf", lines)).exons
    assert exons[["exon_number", "start"]].values.tolist() == [[1, 40], [2, 20], [3, 10]]


def test_genes_and_transcripts_without_their_own_lines_get_spans(tmp_path: Path):
    exon_only = [line for line in gene_lines(MINUS1) if "\texon\t" in line]
    annotation = load_annotation(write_gtf(tmp_path / "exons_only.gtf", exon_only))
    assert annotation.genes[["gene_id", "gene_name", "start", "end"]].values.tolist() == [
        ["ENSG00000000002.3", "MINUS1", 30, 58]
    ]
    assert annotation.transcripts[["transcript_id", "start", "end", "is_ensembl_canonical"]].values.tolist() == [
        ["ENST00000000021.1", 30, 58, True]
    ]


def test_gene_without_name_is_named_by_its_id_and_counted(tmp_path: Path):
    nameless = Gene("ENSG00000000007.1", None, "chr2", "+", 3, 12, [Transcript("ENST00000000071.1", [(3, 12)])])
    annotation = load_annotation(write_gtf(tmp_path / "a.gtf", [*gene_lines(PLUS1), *gene_lines(nameless)]))
    assert annotation.unnamed_genes == 1
    assert annotation.genes.gene_name.tolist() == ["PLUS1", "ENSG00000000007.1"]


def test_duplicated_gene_names_are_allowed(tmp_path: Path):
    twin = Gene("ENSG00000000009.1", "PLUS1", "chr2", "+", 3, 12, [Transcript("ENST00000000091.1", [(3, 12)])])
    genes = load_annotation(write_gtf(tmp_path / "a.gtf", [*gene_lines(PLUS1), *gene_lines(twin)])).genes
    assert genes[genes.gene_name == "PLUS1"].gene_id.tolist() == ["ENSG00000000001.5", "ENSG00000000009.1"]


def test_ensembl_biotype_and_gzip(tmp_path: Path):
    line = gtf_line("1", "gene", 3, 12, "+", [("gene_id", "ENSG00000000005"), ("gene_biotype", "miRNA")])
    path = tmp_path / "ensembl.gtf.gz"
    path.write_bytes(gzip.compress(("#!genome-build GRCh38.p14\n" + line + "\n").encode()))
    genes = load_annotation(path).genes
    assert genes[["gene_id", "gene_name", "gene_type", "start"]].values.tolist() == [
        ["ENSG00000000005", "ENSG00000000005", "miRNA", 2]
    ]


def test_missing_gene_id_names_the_line(tmp_path: Path):
    lines = gene_lines(PLUS1)
    lines[3] = lines[3].replace('gene_id "ENSG00000000001.5"; ', "")  # the second exon line of ENST…11.2
    with pytest.raises(InputError, match=r"a.gtf: line 7 \(exon chr1:21-28\): 1 line\(s\) lack gene_id"):
        load_annotation(write_gtf(tmp_path / "a.gtf", lines))


def test_missing_transcript_id_names_the_line(tmp_path: Path):
    lines = gene_lines(MINUS1)
    lines[1] = lines[1].replace('transcript_id "ENST00000000021.1"; ', "")
    with pytest.raises(InputError, match=r"line 5 \(transcript chr1:31-58\): 1 line\(s\) lack transcript_id"):
        load_annotation(write_gtf(tmp_path / "a.gtf", lines))


def test_gene_id_on_two_gene_lines(tmp_path: Path):
    lines = gene_lines(PLUS1) + [gene_lines(PLUS1)[0]]
    with pytest.raises(InputError, match=r"line 4 \(gene chr1:11-50\), line \d+ .*1 gene_id\(s\) have more than one"):
        load_annotation(write_gtf(tmp_path / "a.gtf", lines))


def test_not_a_gtf(tmp_path: Path):
    path = tmp_path / "genes.bed"
    path.write_text("chr1\t10\t50\tPLUS1\n")
    with pytest.raises(InputError, match=r"line 1: not a GTF line \(expected 9 tab-separated columns\): 'chr1"):
        load_annotation(path)


def test_header_only_gtf(tmp_path: Path):
    with pytest.raises(InputError, match="no feature lines"):
        load_annotation(write_gtf(tmp_path / "empty.gtf", []))
