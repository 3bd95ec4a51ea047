import gzip
from pathlib import Path

import pysam
import pytest

from kb_assets.errors import InputError
from kb_assets.genome import ReferenceGenome
from kb_assets_tests.genome.conftest import CHR1, CHR2, CHR3, write_fasta


def test_contigs_in_file_order_and_fai_built(fasta_path: Path):
    genome = ReferenceGenome(fasta_path)
    assert genome.contigs == {"chr1": 60, "chr2": 20, "chr3": 20}
    assert list(genome.contigs) == ["chr1", "chr2", "chr3"]
    assert Path(f"{fasta_path}.fai").is_file()


def test_fetch_is_zero_based_half_open_and_uppercases_soft_masked_bases(fasta_path: Path):
    genome = ReferenceGenome(fasta_path)
    assert genome.fetch("chr1", 0, 5) == "AAAAA"
    assert genome.fetch("chr1", 8, 12) == "CCGG"  # across a line break
    assert genome.fetch("chr1", 38, 52) == "TTGATCGATCGACC"  # lowercase 40-49 in the file
    assert genome.fetch("chr2", 20, 20) == ""


def test_windows_line_endings_read_like_unix(tmp_path: Path):
    genome = ReferenceGenome(write_fasta(tmp_path / "crlf.fa", {"chr1": CHR1, "chr2": CHR2}, width=7, newline="\r\n"))
    assert genome.contigs == {"chr1": 60, "chr2": 20}
    assert genome.fetch("chr1", 5, 22) == "CCCCCGGGGGTTTTTAC"
    assert genome.fetch("chr2", 0, 20) == CHR2


def test_iupac_codes_are_kept(tmp_path: Path):
    genome = ReferenceGenome(write_fasta(tmp_path / "iupac.fa", {"x": "ACRYKMswbdhvNn"}))
    assert genome.fetch("x", 0, 14) == "ACRYKMSWBDHVNN"


def test_empty_contig_opens(tmp_path: Path):
    path = tmp_path / "empty_contig.fa"
    path.write_text(">a\nACGT\n>empty\n>b\nGGCC\n")
    genome = ReferenceGenome(path)
    assert genome.contigs == {"a": 4, "empty": 0, "b": 4}
    assert genome.fetch("b", 1, 3) == "GC"


def test_bgzipped_fasta_reads_by_region(tmp_path: Path):
    plain = write_fasta(tmp_path / "g.fa", {"chr1": CHR1, "chr3": CHR3})
    pysam.tabix_compress(str(plain), str(tmp_path / "g.fa.gz"))
    genome = ReferenceGenome(tmp_path / "g.fa.gz")
    assert genome.contigs == {"chr1": 60, "chr3": 20}
    assert genome.fetch("chr1", 38, 52) == "TTGATCGATCGACC"


def test_unknown_contig_is_named(fasta_path: Path):
    expected = r"contig chrZ: no such contig in the FASTA \(it has 3 contigs: chr1, chr2, chr3\)"
    with pytest.raises(InputError, match=expected):
        ReferenceGenome(fasta_path).fetch("chrZ", 0, 1)


def test_region_past_contig_end_names_region_and_length(fasta_path: Path):
    with pytest.raises(InputError, match=r"region chr2:15-21: the region lies outside contig chr2 \(length 20\)"):
        ReferenceGenome(fasta_path).fetch("chr2", 15, 21)


def test_non_fasta_file_says_what_was_found(tmp_path: Path):
    path = tmp_path / "notes.fa"
    path.write_text("chrom\tstart\tend\nchr1\t1\t2\n")
    with pytest.raises(InputError, match=r"line 1: not a FASTA file.*starts with 'chrom\\tstart\\tend'"):
        ReferenceGenome(path)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "zero.fa"
    path.touch()
    with pytest.raises(InputError, match="empty"):
        ReferenceGenome(path)


def test_ragged_lines_are_reported_as_malformed(tmp_path: Path):
    path = tmp_path / "ragged.fa"
    path.write_text(">chr1\nACGTACGT\nACG\nACGTACGT\n")
    with pytest.raises(InputError, match=r"ragged.fa: not a well-formed FASTA .*chr1"):
        ReferenceGenome(path)


def test_fasta_truncated_after_indexing(tmp_path: Path):
    path = write_fasta(tmp_path / "g.fa", {"chr1": CHR1, "chr2": CHR2})
    ReferenceGenome(path).close()  # builds g.fa.fai for the whole file
    fai = Path(f"{path}.fai")
    path.write_bytes(path.read_bytes()[:50])
    fai.touch()  # the index is no older than the FASTA, so it is trusted
    with pytest.raises(InputError, match=r"index \(.fai\): the index describes 99 bytes but the file has 50"):
        ReferenceGenome(path)


def test_truncated_bgzip_fasta(tmp_path: Path):
    plain = write_fasta(tmp_path / "g.fa", {"chr1": CHR1 * 50})
    pysam.tabix_compress(str(plain), str(tmp_path / "g.fa.gz"))
    data = (tmp_path / "g.fa.gz").read_bytes()
    (tmp_path / "cut.fa.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.fa.gz: end of file: the bgzipped FASTA is truncated"):
        ReferenceGenome(tmp_path / "cut.fa.gz")


def test_plain_gzip_is_rejected_with_the_bgzip_fix(tmp_path: Path):
    path = tmp_path / "g.fa.gz"
    path.write_bytes(gzip.compress(b">chr1\nACGT\n"))
    with pytest.raises(InputError, match="not with bgzip.*Fix: recompress it"):
        ReferenceGenome(path)
