"""Tiles anchored to reference coordinates: cores partition the region, an allele's tiles rebuild its sequence, and
an edit changes only the tiles that hold it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kb_assets.genome.haplotypes import allele_edits, apply_edits
from kb_assets.genome.sequence import reverse_complement
from kb_assets.genome.tiles import Tile, allele_tiles, tile_alleles, tile_spans

RNG = np.random.default_rng(3)
REFERENCE = "".join(RNG.choice(list("ACGT"), 1000))
START = 5000  # the region [START, START + 1000) of the + strand


@pytest.mark.parametrize(("length", "tile_bp", "context"), [(1, 10, 3), (999, 100, 20), (1000, 100, 0),
                                                            (1001, 333, 50), (57, None, 10), (250, 250, 5)])
def test_cores_partition_the_region_and_spans_add_context(length, tile_bp, context):
    spans = tile_spans(100, 100 + length, tile_bp, context)
    assert spans[0].core_start == 100 and spans[-1].core_end == 100 + length
    assert all(a.core_end == b.core_start for a, b in zip(spans, spans[1:]))
    assert all(max(100, s.core_start - context) == s.start and min(100 + length, s.core_end + context) == s.end
               for s in spans)
    if tile_bp is not None:
        assert all(s.core_end - s.core_start <= tile_bp for s in spans)
        assert max(s.core_end - s.core_start for s in spans) - min(s.core_end - s.core_start for s in spans) <= 1


def _random_edits(rng: np.random.Generator, n: int) -> list[tuple[int, int, str]]:
    """Non-overlapping SNVs, insertions and deletions inside the region, as the haplotype builder applies them."""
    edits = []
    for position in sorted(rng.choice(np.arange(START + 1, START + 999, 7), n, replace=False)):
        kind = rng.integers(3)
        ref = REFERENCE[position - START: position - START + 4]
        alt = {0: ("TGCA"[("ACGT".index(ref[0]))] + ref[1:]), 1: ref[0] + "GGT" + ref[1:], 2: ref[0]}[kind]
        edits += allele_edits(int(position), ref, alt)
    return sorted(edits)


@pytest.mark.parametrize("strand", ["+", "-"])
@pytest.mark.parametrize("seed", range(5))
def test_cores_of_an_allele_rebuild_its_sequence_on_either_strand(strand, seed):
    edits = _random_edits(np.random.default_rng(seed), 25)
    expected, applied = apply_edits(REFERENCE, START, edits)
    assert applied == edits
    spans = tile_spans(START, START + 1000, 128, 40)
    tiles = allele_tiles(REFERENCE, START, strand, spans, edits)
    cores = "".join(t.sequence[t.core_start:t.core_end] for t in tiles)
    assert cores == (expected if strand == "+" else reverse_complement(expected))
    # The context around each core is the neighbouring allele sequence itself.
    assert all(t.sequence in (expected if strand == "+" else reverse_complement(expected)) for t in tiles)


def test_an_edit_changes_only_the_tile_that_holds_it():
    spans = tile_spans(START, START + 1000, 200, 30)
    reference = allele_tiles(REFERENCE, START, "+", spans)
    snv = allele_edits(START + 450, REFERENCE[450], "TGCA"["ACGT".index(REFERENCE[450])])
    changed = [a.tile_id != b.tile_id for a, b in zip(reference, allele_tiles(REFERENCE, START, "+", spans, snv))]
    assert changed == [False, False, True, False, False]
    # Within another tile's context (base 595 is in the context of tile 3, whose core starts at 600), that tile
    # changes as well: its tokens near the core edge see the variant.
    near_edge = allele_edits(START + 595, REFERENCE[595], "TGCA"["ACGT".index(REFERENCE[595])])
    changed = [a.tile_id != b.tile_id for a, b in zip(reference,
                                                      allele_tiles(REFERENCE, START, "+", spans, near_edge))]
    assert changed == [False, False, True, True, False]


def test_an_insertion_goes_with_the_base_it_precedes_and_a_deletion_is_clipped_per_piece():
    spans = tile_spans(START, START + 1000, 500, 0)
    insertion = [(START + 500, START + 500, "GGGG")]
    first, second = allele_tiles(REFERENCE, START, "+", spans, insertion)
    assert first.sequence == REFERENCE[:500] and second.sequence == "GGGG" + REFERENCE[500:]
    deletion = [(START + 490, START + 510, "")]
    first, second = allele_tiles(REFERENCE, START, "+", spans, deletion)
    assert first.sequence == REFERENCE[:490] and second.sequence == REFERENCE[510:]


def test_a_deleted_core_leaves_an_empty_core():
    spans = tile_spans(START, START + 1000, 500, 20)
    tiles = allele_tiles(REFERENCE, START, "+", spans, [(START, START + 500, "")])
    assert tiles[0].core_start == tiles[0].core_end == 0 and tiles[0].sequence == REFERENCE[500:520]


def test_reverse_complement_mirrors_the_core():
    tile = Tile("AACCGGTTA", 2, 6)
    mirrored = tile.reverse_complement()
    assert mirrored == Tile("TAACCGGTT", 3, 7)
    assert mirrored.sequence[mirrored.core_start:mirrored.core_end] == reverse_complement("CCGG")
    assert mirrored.reverse_complement() == tile and tile.tile_id != Tile("AACCGGTTA", 2, 7).tile_id


def test_tile_alleles_keeps_each_distinct_tile_once():
    regions = pd.DataFrame({"region_id": ["r1", "r2"], "start": [START, START], "end": [START + 1000, START + 1000],
                            "strand": ["+", "-"], "sequence": [REFERENCE, reverse_complement(REFERENCE)]})
    snv = allele_edits(START + 450, REFERENCE[450], "TGCA"["ACGT".index(REFERENCE[450])])
    alleles = pd.DataFrame({"region_id": ["r1", "r1", "r2"], "allele": [0, 1, 0],
                            "edits": [[], [{"start": s, "end": e, "text": t} for s, e, t in snv], []]})
    tiles, allele_tiles_table = tile_alleles(regions, alleles, 200, 30)
    reference, variant, minus = allele_tiles_table["tiles"]
    assert len(reference) == 5 and len(set(reference) & set(variant)) == 4
    assert len(tiles) == 5 + 1 + 5 and tiles["tile_id"].is_unique
    # The minus-strand region lists its tiles in transcription order: its first tile is the + strand's last.
    last_plus = tiles.set_index("tile").loc[reference[-1], "sequence"]
    assert tiles.set_index("tile").loc[minus[0], "sequence"] == reverse_complement(last_plus)
