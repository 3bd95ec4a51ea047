"""Tiny hand-checkable genome inputs written into tmp_path: a FASTA, a GENCODE-style GTF, a gene-set manifest.

The reference (0-based positions in the comments):

    chr1  0 AAAAACCCCC 10 GGGGGTTTTT 20 ACGTACGTAC 30 TTGGCCAATT 40 gatcgatcga 50 CCCANNTTTG 60
    chr2  TTTTTGGGGGCCCCCAAAAA (20)
    chr3  ACGTACGTACGTACGTACGT (20, no genes)

chr1 40-49 is soft-masked (lowercase) in the file. The annotation (GTF, 1-based inclusive):

    PLUS1  ENSG00000000001.5  chr1 + 11-50
        ENST00000000011.2 Ensembl_canonical  exons 11-15, 21-28, 41-50; CDS 13-15, 21-28, 41-45
        ENST00000000012.1                    exons 11-20, 41-50
    MINUS1 ENSG00000000002.3  chr1 - 26-58
        ENST00000000021.1 Ensembl_canonical  exons 51-58 (#1), 31-40 (#2); CDS 51-54, 33-40
    NCGENE ENSG00000000003.1  chr2 + 3-12
        ENST00000000031.1 Ensembl_canonical  exon 3-12, no CDS
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pysam
import pytest

CHR1 = "AAAAACCCCC" "GGGGGTTTTT" "ACGTACGTAC" "TTGGCCAATT" "gatcgatcga" "CCCANNTTTG"
CHR2 = "TTTTTGGGGGCCCCCAAAAA"
CHR3 = "ACGTACGTACGTACGTACGT"
GENCODE_HEADER = (
    "##description: evidence-based annotation of the human genome (GRCh38), version 46 (Ensembl 112)",
    "##provider: GENCODE",
    "##format: gtf",
)


def write_fasta(path: Path, contigs: dict[str, str], width: int = 10, newline: str = "\n") -> Path:
    """Write contigs as a FASTA with `width` bases per line."""
    lines = []
    for name, sequence in contigs.items():
        lines.append(f">{name}")
        lines.extend(sequence[i : i + width] for i in range(0, len(sequence), width))
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def gtf_line(
    chrom: str, feature: str, start: int, end: int, strand: str, attributes: Sequence[tuple[str, object]]
) -> str:
    """One GTF line; `attributes` are (key, value) pairs, repeated keys allowed (tag)."""
    text = " ".join(f'{key} {value};' if key == "exon_number" else f'{key} "{value}";' for key, value in attributes)
    return "\t".join([chrom, "TEST", feature, str(start), str(end), ".", strand, ".", text])


@dataclass
class Transcript:
    transcript_id: str
    exons: list[tuple[int, int]]  # 1-based inclusive, in transcription order
    cds: list[tuple[int, int]] = field(default_factory=list)  # parallel to exons it lies in, same order
    cds_exon_numbers: list[int] | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Gene:
    gene_id: str
    gene_name: str | None
    chrom: str
    strand: str
    start: int
    end: int
    transcripts: list[Transcript]
    gene_type: str = "protein_coding"


def gene_lines(gene: Gene) -> list[str]:
    """gene, transcript, exon and CDS lines of one gene, GENCODE style."""
    named = [("gene_name", gene.gene_name)] if gene.gene_name is not None else []
    base = [("gene_id", gene.gene_id), ("gene_type", gene.gene_type), *named]
    lines = [gtf_line(gene.chrom, "gene", gene.start, gene.end, gene.strand, base)]
    for tx in gene.transcripts:
        tx_attrs = [("gene_id", gene.gene_id), ("transcript_id", tx.transcript_id), *named]
        tags = [("tag", tag) for tag in tx.tags]
        span = (min(s for s, _ in tx.exons), max(e for _, e in tx.exons))
        lines.append(gtf_line(gene.chrom, "transcript", *span, gene.strand, tx_attrs + tags))
        for number, (s, e) in enumerate(tx.exons, 1):
            lines.append(gtf_line(gene.chrom, "exon", s, e, gene.strand, tx_attrs + [("exon_number", number)] + tags))
        cds_numbers = tx.cds_exon_numbers or list(range(1, len(tx.cds) + 1))
        for number, (s, e) in zip(cds_numbers, tx.cds):
            lines.append(gtf_line(gene.chrom, "CDS", s, e, gene.strand, tx_attrs + [("exon_number", number)] + tags))
    return lines


def write_gtf(path: Path, lines: Iterable[str], header: Iterable[str] = GENCODE_HEADER) -> Path:
    path.write_text("\n".join([*header, *lines]) + "\n")
    return path


PLUS1 = Gene(
    "ENSG00000000001.5", "PLUS1", "chr1", "+", 11, 50,
    [
        Transcript("ENST00000000011.2", [(11, 15), (21, 28), (41, 50)], [(13, 15), (21, 28), (41, 45)],
                   tags=["basic", "Ensembl_canonical"]),
        Transcript("ENST00000000012.1", [(11, 20), (41, 50)], tags=["basic"]),
    ],
)
MINUS1 = Gene(
    "ENSG00000000002.3", "MINUS1", "chr1", "-", 26, 58,
    [Transcript("ENST00000000021.1", [(51, 58), (31, 40)], [(51, 54), (33, 40)], tags=["Ensembl_canonical"])],
)
NCGENE = Gene(
    "ENSG00000000003.1", "NCGENE", "chr2", "+", 3, 12,
    [Transcript("ENST00000000031.1", [(3, 12)], tags=["Ensembl_canonical"])],
    gene_type="lncRNA",
)


def write_vcf(
    path: Path,
    samples: Sequence[str],
    records: Iterable[tuple[str, int, str, str, Sequence[str]] | tuple[str, int, str, str, Sequence[str], str]],
    contigs: dict[str, int] | None = None,
) -> Path:
    """A bgzipped, tabix-indexed VCF at `path` (.vcf.gz); records are (chrom, pos, ref, alt, genotypes[, filter])."""
    contigs = contigs or {"chr1": len(CHR1), "chr2": len(CHR2), "chr3": len(CHR3)}
    lines = [
        "##fileformat=VCFv4.2",
        *(f"##contig=<ID={name},length={length}>" for name, length in contigs.items()),
        '##FILTER=<ID=LowQual,Description="low quality">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]
    for chrom, pos, ref, alt, genotypes, *filters in records:
        lines.append("\t".join([chrom, str(pos), ".", ref, alt, ".", filters[0] if filters else "PASS", ".", "GT",
                                *genotypes]))
    plain = path.with_suffix("")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


@pytest.fixture
def fasta_path(tmp_path: Path) -> Path:
    return write_fasta(tmp_path / "genome.fa", {"chr1": CHR1, "chr2": CHR2, "chr3": CHR3})


@pytest.fixture
def gtf_path(tmp_path: Path) -> Path:
    return write_gtf(tmp_path / "annotation.gtf", [*gene_lines(PLUS1), *gene_lines(MINUS1), *gene_lines(NCGENE)])


@pytest.fixture
def write_gene_set(tmp_path: Path):
    """Write a gene-set manifest from lines (the header `gene` is added unless given) and return its path."""

    def write(lines: Sequence[str], header: str | None = "gene\tnote") -> Path:
        path = tmp_path / "gene_set.tsv"
        path.write_text("\n".join(([header] if header else []) + list(lines)) + "\n")
        return path

    return write
