"""DNA string helpers shared by region extraction, haplotypes and the encoder."""

from __future__ import annotations

# IUPAC-aware complement so ambiguity codes survive reverse-complementing (N stays N, R↔Y …).
_COMPLEMENT = str.maketrans("ACGTRYKMBVDHNSWacgtrykmbvdhnsw", "TGCAYRMKVBHDNSWtgcayrmkvbhdnsw")


def reverse_complement(sequence: str) -> str:
    """Reverse complement, case preserved."""
    return sequence.translate(_COMPLEMENT)[::-1]
