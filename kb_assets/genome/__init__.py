"""Genome domain code: FASTA access, annotation parsing, gene sets, region extraction, VCF → haplotypes."""

from kb_assets.genome.fasta import ReferenceGenome

__all__ = ["ReferenceGenome"]
