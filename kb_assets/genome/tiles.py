"""Tiles: every region cut into pieces anchored to reference coordinates, so that a variant changes only the tiles
that hold it and every other tile of a subject's region is the reference's (embedded once, then a cache hit).

A region [start, end) of the + strand is split into `n = ceil(length / tile_bp)` cores of nearly equal length; a
tile is its core plus up to `context_bp` bases on each side (clipped to the region). The model sees the whole tile;
only tokens that start in the core are counted, so the cores partition the region and every token of the region is
counted exactly once, while tokens near a core edge still see context.

A subject's allele (its applied edits) is cut the same way: each piece (left context, core, right context) takes the
edits whose position lies in it (an insertion goes with the base it precedes; a deletion is clipped to the piece), so
a tile changes only when an edit falls inside it. Tiles are read on the transcribed strand, like regions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kb_assets.genome.haplotypes import Edit, apply_edits
from kb_assets.genome.sequence import reverse_complement


@dataclass(frozen=True)
class TileSpan:
    """One tile of a region, + strand reference coordinates: the model sees [start, end), counts [core_start,
    core_end)."""

    core_start: int
    core_end: int
    start: int
    end: int


@dataclass(frozen=True)
class Tile:
    """A tile's sequence on the transcribed strand, and where its counted core lies in it (half-open)."""

    sequence: str
    core_start: int
    core_end: int

    @property
    def tile_id(self) -> str:
        """Content address: the sequence and its core, which together decide the tile's vectors."""
        payload = f"{self.core_start}:{self.core_end}:{self.sequence}".encode()
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    def reverse_complement(self) -> Tile:
        """The same tile read on the other strand (its core mirrored)."""
        length = len(self.sequence)
        return Tile(reverse_complement(self.sequence), length - self.core_end, length - self.core_start)


def tile_spans(start: int, end: int, tile_bp: int | None, context_bp: int) -> list[TileSpan]:
    """The tiles of [start, end): `tile_bp=None` makes one tile of the whole region."""
    length = end - start
    n = 1 if tile_bp is None or length <= tile_bp else math.ceil(length / tile_bp)
    bounds = [start + (i * length) // n for i in range(n + 1)]
    return [
        TileSpan(core_start=a, core_end=b, start=max(start, a - context_bp), end=min(end, b + context_bp))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def allele_tiles(forward_reference: str, region_start: int, strand: str, spans: Sequence[TileSpan],
                 edits: Sequence[Edit] = ()) -> list[Tile]:
    """The tiles of one allele of a region, in transcription order.

    `forward_reference` is the region's + strand reference sequence from `region_start`; `edits` the allele's applied
    edits (+ strand, 0-based, sorted, non-overlapping; none for the reference).
    """
    tiles = []
    for span in spans:
        left, core, right = (
            _piece(forward_reference, region_start, a, b, edits)
            for a, b in ((span.start, span.core_start), (span.core_start, span.core_end), (span.core_end, span.end))
        )
        if strand == "-":
            tiles.append(Tile(reverse_complement(left + core + right), len(right), len(right) + len(core)))
        else:
            tiles.append(Tile(left + core + right, len(left), len(left) + len(core)))
    return tiles[::-1] if strand == "-" else tiles


def _piece(forward_reference: str, region_start: int, a: int, b: int, edits: Sequence[Edit]) -> str:
    """Reference bases [a, b) with the edits that fall in them: substitutions and insertions at a ≤ position < b
    (an insertion precedes the base at its position), deletions clipped to [a, b)."""
    inside = []
    for edit_start, edit_end, text in edits:
        if edit_start == edit_end or edit_end - edit_start == len(text):
            if a <= edit_start < b:
                inside.append((edit_start, edit_end, text))
        elif edit_start < b and edit_end > a:
            inside.append((max(edit_start, a), min(edit_end, b), ""))
    sequence, _ = apply_edits(forward_reference[a - region_start : b - region_start], a, inside)
    return sequence


def tile_alleles(regions: pd.DataFrame, alleles: pd.DataFrame, tile_bp: int | None,
                 context_bp: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every allele of every region cut into tiles, each distinct tile once.

    regions: region_id, start, end, strand, sequence (the reference regions, transcribed strand).
    alleles: region_id, allele, edits (list of {start, end, text}; empty for the reference).
    Returns (tiles: tile (int32), tile_id, sequence, core_start, core_end — one row per distinct tile;
    allele_tiles: region_id, allele, tiles (list of tile numbers, transcription order)).
    """
    by_region = regions.set_index("region_id")
    index: dict[str, int] = {}
    rows: list[Tile] = []
    allele_rows = []
    for region_id, allele, edits in zip(alleles["region_id"], alleles["allele"], alleles["edits"]):
        region = by_region.loc[region_id]
        forward = reverse_complement(region["sequence"]) if region["strand"] == "-" else region["sequence"]
        spans = tile_spans(int(region["start"]), int(region["end"]), tile_bp, context_bp)
        applied = [(int(e["start"]), int(e["end"]), e["text"]) for e in edits]
        numbers = []
        for tile in allele_tiles(forward, int(region["start"]), region["strand"], spans, applied):
            tile_id = tile.tile_id
            if tile_id not in index:
                index[tile_id] = len(rows)
                rows.append(tile)
            numbers.append(index[tile_id])
        allele_rows.append((region_id, int(allele), numbers))
    tiles = pd.DataFrame({
        "tile": np.arange(len(rows), dtype=np.int32),
        "tile_id": pd.Series(list(index), dtype="str"),
        "sequence": pd.Series([t.sequence for t in rows], dtype="str"),
        "core_start": np.array([t.core_start for t in rows], dtype=np.int32),
        "core_end": np.array([t.core_end for t in rows], dtype=np.int32),
    })
    return tiles, pd.DataFrame(allele_rows, columns=["region_id", "allele", "tiles"]).astype({"allele": np.int32})
