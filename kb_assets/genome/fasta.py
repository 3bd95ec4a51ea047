"""Reference genome access: a FASTA (plain or bgzipped) read by region through its .fai index.

Plain FASTA goes through pyfaidx (it keeps empty contigs and reads Windows line endings); bgzipped FASTA goes
through pysam/htslib, which builds the .fai and .gzi it needs (pyfaidx would need Biopython for BGZF). htslib
leaves zero-length contigs out of its index, so an empty contig in a bgzipped FASTA is not listed in `contigs`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pyfaidx
import pysam

from kb_assets.errors import InputError
from kb_assets.genome.bgzf import check_bgzf, is_gzip

_REINDEX = "delete the stale index (.fai/.gzi) next to it so it is rebuilt"


class ReferenceGenome:
    """A reference FASTA: contig lengths and uppercase sequence by 0-based half-open region."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, None, "FASTA file not found", "point inputs.fasta at an existing FASTA file")
        if self.path.stat().st_size == 0:
            raise InputError(self.path, None, "the FASTA file is empty (0 bytes)", "download or copy it again")
        compressed = is_gzip(self.path)
        if compressed:
            check_bgzf(self.path, "FASTA")
        self._check_first_line(compressed)
        self._handle, self._contigs = self._open_bgzf() if compressed else self._open_plain()

    @property
    def contigs(self) -> dict[str, int]:
        """Contig name → length, in file order."""
        return dict(self._contigs)

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """The uppercase sequence of chrom[start:end] (0-based, half-open)."""
        self.check_region(chrom, start, end)
        if start == end:
            return ""
        if isinstance(self._handle, pysam.FastaFile):
            return self._handle.fetch(chrom, start, end).upper()
        return self._handle.faidx.fetch(chrom, start + 1, end).seq

    def length(self, chrom: str) -> int:
        """The length of a contig; InputError naming it if the FASTA has no such contig."""
        if chrom not in self._contigs:
            names = list(self._contigs)
            sample = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            raise InputError(
                self.path,
                f"contig {chrom}",
                f"no such contig in the FASTA (it has {len(names)} contigs: {sample})",
                "use a FASTA that contains this contig, with the same naming as the annotation",
            )
        return self._contigs[chrom]

    def check_region(self, chrom: str, start: int, end: int) -> None:
        """Raise InputError unless chrom is a contig and 0 <= start <= end <= its length."""
        length = self.length(chrom)
        if not 0 <= start <= end <= length:
            raise InputError(
                self.path,
                f"region {chrom}:{start}-{end}",
                f"the region lies outside contig {chrom} (length {length})",
                "check that the annotation and the FASTA are of the same genome build",
            )

    def close(self) -> None:
        """Release the open file handles."""
        self._handle.close()

    def __enter__(self) -> "ReferenceGenome":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReferenceGenome({str(self.path)!r}, {len(self._contigs)} contigs)"

    def _check_first_line(self, compressed: bool) -> None:
        opener = gzip.open if compressed else open
        try:
            with opener(self.path, "rb") as handle:
                first = handle.readline(200)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(self.path, "line 1", f"cannot read the file ({err})", "download or copy it again") from err
        if not first.startswith(b">"):
            found = first.decode("utf-8", "replace").rstrip("\r\n")[:60]
            raise InputError(
                self.path,
                "line 1",
                f"not a FASTA file: it should start with a '>name' header line but starts with {found!r}",
                "point inputs.fasta at the reference genome FASTA",
            )

    def _open_plain(self) -> tuple[pyfaidx.Fasta, dict[str, int]]:
        try:
            fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=True)
        except pyfaidx.FastaIndexingError as err:
            raise InputError(
                self.path,
                None,
                f"not a well-formed FASTA ({err}); a file cut short or concatenated from pieces reads like this",
                "download or copy it again; all sequence lines of a record except its last must be equally long",
            ) from None
        except PermissionError as err:
            raise InputError(
                self.path, "index (.fai)", f"cannot write the index next to the FASTA ({err})",
                "make the folder writable once, or index it where it is writable: samtools faidx <fasta>",
            ) from None
        except ValueError as err:  # pyfaidx rejects a .fai it cannot parse
            raise InputError(self.path, "index (.fai)", f"unreadable index ({err})", _REINDEX) from None
        index = fasta.faidx.index
        self._check_index_fits(max(_record_end(record) for record in index.values()))
        return fasta, {name: record.rlen for name, record in index.items()}

    def _check_index_fits(self, indexed_end: int) -> None:
        # A FASTA cut short after its .fai was made still opens: the index then points past the end of the file.
        size = self.path.stat().st_size
        if indexed_end > size:
            raise InputError(
                self.path,
                "index (.fai)",
                f"the index describes {indexed_end} bytes but the file has {size}: the FASTA is truncated, "
                "or the .fai belongs to another file",
                f"download or copy the FASTA again; if it is intact, {_REINDEX}",
            )

    def _open_bgzf(self) -> tuple[pysam.FastaFile, dict[str, int]]:
        try:
            fasta = pysam.FastaFile(str(self.path))
        except (OSError, ValueError) as err:
            raise InputError(
                self.path,
                None,
                f"htslib cannot index or read the bgzipped FASTA ({err})",
                f"check that it is an intact bgzipped FASTA; if it is, {_REINDEX}",
            ) from None
        return fasta, dict(zip(fasta.references, fasta.lengths))


def _record_end(record: pyfaidx.IndexRecord) -> int:
    """The byte offset just past a contig's last base, from its .fai entry."""
    if record.rlen == 0:
        return record.offset
    full_lines, rest = divmod(record.rlen - 1, record.lenc)
    return record.offset + full_lines * record.lenb + rest + 1
