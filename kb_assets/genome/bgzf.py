"""BGZF (block gzip) checks shared by the bgzipped FASTA and the cohort VCF/BCF.

htslib reads a BGZF file cut short without raising: it logs to stderr and ends the iteration, so a truncated
file would pass as a shorter one. Checking the end-of-file block up front turns that into a clear error.
"""

from __future__ import annotations

from pathlib import Path

from kb_assets.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
# Every BGZF file ends with this empty block; a file cut short lacks it (SAM/BAM spec §4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def check_bgzf(path: Path, kind: str) -> None:
    """Raise InputError unless a gzip file is BGZF (readable by region) and ends with its EOF block."""
    with open(path, "rb") as handle:
        header = handle.read(18)
        handle.seek(max(0, path.stat().st_size - len(BGZF_EOF)))
        tail = handle.read()
    # A BGZF block is a gzip member whose extra field carries the 'BC' subfield (SAM/BAM spec §4.1).
    if not (len(header) >= 14 and header[3] & 4 and header[12:14] == b"BC"):
        raise InputError(
            path,
            None,
            f"the {kind} is gzip-compressed but not with bgzip, so it cannot be read by region",
            f"recompress it: gunzip -c {path.name} | bgzip > {path.stem}.bgz.gz",
        )
    if tail != BGZF_EOF:
        raise InputError(
            path,
            "end of file",
            f"the bgzipped {kind} is truncated (its last BGZF block is cut short or its end-of-file block is missing)",
            "download or copy it again, then check its checksum",
        )
