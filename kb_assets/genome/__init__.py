"""Genome domain code: FASTA access, annotation parsing, gene sets, region extraction, VCF → haplotypes."""

from kb_assets.genome.annotation import Annotation, load_annotation
from kb_assets.genome.contigs import check_contig_names, check_genes_on_chromosomes
from kb_assets.genome.fasta import ReferenceGenome
from kb_assets.genome.gene_set import choose_transcripts, read_gene_set, resolve_gene_set
from kb_assets.genome.haplotypes import (
    COUNT_DESCRIPTIONS,
    HAPLOTYPE_MODES,
    REFERENCE_SUBJECT,
    HaplotypeResult,
    build_haplotypes,
    reference_haplotypes,
    vcf_samples,
)
from kb_assets.genome.regions import (
    REGION_DTYPES,
    REGION_MODES,
    extract_regions,
)
from kb_assets.genome.sequence import reverse_complement

__all__ = [
    "Annotation",
    "COUNT_DESCRIPTIONS",
    "HAPLOTYPE_MODES",
    "HaplotypeResult",
    "REFERENCE_SUBJECT",
    "REGION_DTYPES",
    "REGION_MODES",
    "ReferenceGenome",
    "build_haplotypes",
    "check_contig_names",
    "check_genes_on_chromosomes",
    "choose_transcripts",
    "extract_regions",
    "load_annotation",
    "read_gene_set",
    "reference_haplotypes",
    "resolve_gene_set",
    "reverse_complement",
    "vcf_samples",
]
