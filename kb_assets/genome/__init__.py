"""Genome domain code: FASTA access, annotation parsing, gene sets, region extraction, VCF → haplotypes."""
