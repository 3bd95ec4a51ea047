"""BPE token report: region types of a hand-checkable genome, and token statistics under a tokenizer whose tokens
are known (AT, ATG, GC besides the bases)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from kb_assets.diagnostics import TokenTally, codon_frame_test, exon_enrichment, region_type_sequences
from kb_assets.diagnostics.tokens import REGION_COLUMNS, token_length_shares
from kb_assets.genome import ReferenceGenome, load_annotation, resolve_gene_set
from kb_assets_tests.genome.conftest import (
    CHR1,
    CHR2,
    CHR3,
    MINUS1,
    PLUS1,
    gene_lines,
    gtf_line,
    write_fasta,
    write_gtf,
)


def region_frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(region_type, sequence, cds_offset) rows as REGION_COLUMNS."""
    return pd.DataFrame([
        {"gene_id": "G", "gene_name": "G", "region_type": t, "region_index": i, "start": 0, "end": len(s),
         "strand": "+", "sequence": s, "cds_offset": offset}
        for i, (t, s, offset) in enumerate(rows, 1)
    ], columns=REGION_COLUMNS)


@pytest.fixture
def chr1_regions(tmp_path) -> pd.DataFrame:
    """PLUS1 (+) and MINUS1 (−) of the genome test fixture, with UTR lines added to PLUS1's canonical transcript:
    GTF 11-12 and 46-50 (0-based [10, 12) and [45, 50))."""
    canonical = [("gene_id", PLUS1.gene_id), ("transcript_id", "ENST00000000011.2"), ("gene_name", "PLUS1")]
    utrs = [gtf_line("chr1", "UTR", 11, 12, "+", canonical + [("exon_number", 1)]),
            gtf_line("chr1", "UTR", 46, 50, "+", canonical + [("exon_number", 3)])]
    gtf = write_gtf(tmp_path / "a.gtf", [*gene_lines(PLUS1), *utrs, *gene_lines(MINUS1)])
    genome = ReferenceGenome(write_fasta(tmp_path / "g.fa", {"chr1": CHR1, "chr2": CHR2, "chr3": CHR3}))
    annotation = load_annotation(gtf)
    genes = resolve_gene_set(["PLUS1", "MINUS1"], annotation)
    return region_type_sequences(genome, annotation, genes, "chr1", promoter_upstream=5)


def rows_of(regions: pd.DataFrame, gene: str, region_type: str) -> list[tuple]:
    chosen = regions[(regions["gene_name"] == gene) & (regions["region_type"] == region_type)]
    return list(chosen.sort_values("region_index")[["start", "end", "sequence", "cds_offset"]].itertuples(
        index=False, name=None))


def test_region_types_on_the_plus_strand(chr1_regions):
    # chr1: 0 AAAAACCCCC 10 GGGGGTTTTT 20 ACGTACGTAC 30 TTGGCCAATT 40 gatcgatcga 50 CCCANNTTTG 60
    assert rows_of(chr1_regions, "PLUS1", "exon") == [(10, 15, "GGGGG", 0), (20, 28, "ACGTACGT", 0),
                                                      (40, 50, "GATCGATCGA", 0)]
    # CDS 13-15, 21-28, 41-45: each segment's offset is the CDS bases before it (3, then 3 + 8).
    assert rows_of(chr1_regions, "PLUS1", "cds") == [(12, 15, "GGG", 0), (20, 28, "ACGTACGT", 3),
                                                     (40, 45, "GATCG", 11)]
    assert rows_of(chr1_regions, "PLUS1", "utr") == [(10, 12, "GG", 0), (45, 50, "ATCGA", 0)]
    assert rows_of(chr1_regions, "PLUS1", "intron") == [(15, 20, "TTTTT", 0), (28, 40, "ACTTGGCCAATT", 0)]
    assert rows_of(chr1_regions, "PLUS1", "promoter") == [(5, 10, "CCCCC", 0)]


def test_region_types_on_the_minus_strand_are_reverse_complemented_in_transcription_order(chr1_regions):
    # MINUS1: exons 51-58 (#1) and 31-40 (#2); CDS 51-54 and 33-40; TSS at 58, so its 5 bp promoter is 58-60
    # clipped at the contig end.
    assert rows_of(chr1_regions, "MINUS1", "exon") == [(50, 58, "AANNTGGG", 0), (30, 40, "AATTGGCCAA", 0)]
    assert rows_of(chr1_regions, "MINUS1", "cds") == [(50, 54, "TGGG", 0), (32, 40, "AATTGGCC", 4)]
    assert rows_of(chr1_regions, "MINUS1", "intron") == [(40, 50, "TCGATCGATC", 0)]
    assert rows_of(chr1_regions, "MINUS1", "promoter") == [(58, 60, "CA", 0)]
    assert rows_of(chr1_regions, "MINUS1", "utr") == []


def test_token_counts_lengths_and_bp_per_token(hand_tokenizer):
    tally = TokenTally(hand_tokenizer)
    tally.add(region_frame([("exon", "GC" * 30, 0), ("utr", "GCGCA", 0), ("intron", "AT" * 20, 0),
                            ("promoter", "ANNA", 0)]))
    report = tally.report()
    region_types = report.region_types.set_index("region_type")
    assert region_types["bp_per_token"].to_dict() == {"exon": 2.0, "utr": 5 / 3, "intron": 2.0, "promoter": 1.0}
    assert region_types.loc["promoter", "tokens"] == 4 and region_types.loc["exon", "n_regions"] == 1

    tokens = report.tokens.set_index("token")
    # Counted over exon, intron and promoter: utr lies inside exons and is not counted twice.
    assert tokens["count"].to_dict() == {"GC": 30, "AT": 20, "A": 2, "[UNK]": 2}
    assert tokens["rank"].tolist() == [1, 2, 3, 4]
    assert tokens.loc["GC", "share"] == pytest.approx(30 / 54)
    assert tokens["length_bp"].to_dict() == {"GC": 2, "AT": 2, "A": 1, "[UNK]": 1}  # [UNK] stands for one N
    lengths = report.token_lengths.set_index(["region_type", "length_bp"])
    assert lengths.loc[("utr", 2), "count"] == 2 and lengths.loc[("utr", 1), "share"] == pytest.approx(1 / 3)
    assert set(report.token_lengths["region_type"]) == {"exon", "utr", "intron", "promoter"}


def test_token_length_shares_count_an_unk_as_the_one_base_it_replaced(hand_tokenizer):
    # "GCNNA": GC, [UNK], [UNK], A, each counted once, as tokenized_genes counts a tile's tokens.
    counts = Counter(hand_tokenizer.encode("GCNNA"))
    shares = token_length_shares(counts, hand_tokenizer, "chr1 reference").set_index("length_bp")["share"]
    assert shares.to_dict() == {1: 0.75, 2: 0.25}


def test_enrichment_in_exons_by_chi_square(hand_tokenizer):
    tally = TokenTally(hand_tokenizer)
    tally.add(region_frame([("exon", "GC" * 30, 0), ("intron", "AT" * 30, 0)]))
    tokens = tally.report().tokens.set_index("token")
    # GC: 30 of 30 exon tokens, 0 of 30 background ones; 0.5 added to every cell.
    assert tokens.loc["GC", "log_odds_exon"] == pytest.approx(2 * np.log(61))
    assert tokens.loc["AT", "log_odds_exon"] == pytest.approx(-2 * np.log(61))
    # Every expected count is 15: Pearson's statistic is 60 · (30·30)² / 30⁴ = 60.
    assert tokens["test"].tolist() == ["chi2", "chi2"]
    assert tokens.loc["GC", "p_value"] == pytest.approx(chi2.sf(60, df=1))
    # Two equal p-values: BH leaves them as they are.
    assert tokens["q_value"].tolist() == pytest.approx(tokens["p_value"].tolist())


def test_enrichment_uses_fisher_for_rare_tokens():
    result = exon_enrichment(np.array([3, 97]), np.array([0, 100]))
    assert result["test"].tolist() == ["fisher", "fisher"]  # smallest expected count 100·3/200 = 1.5
    # Hypergeometric: P(3) = P(0) = C(100,3)/C(200,3) = 161700/1313400, the two tables as unlikely as the one seen.
    assert result["p_value"].tolist() == pytest.approx([323400 / 1313400] * 2)
    assert result.loc[0, "log_odds_exon"] == pytest.approx(np.log(3.5 * 100.5 / (97.5 * 0.5)))


def test_enrichment_chi_square_statistic_and_bh():
    result = exon_enrichment(np.array([50, 50, 0]), np.array([20, 80, 100]))
    # Token 0: a=50 b=50 c=20 d=180, N=300: statistic 300·(50·180 − 50·20)² / (100·200·70·230).
    statistic = 300 * (50 * 180 - 50 * 20) ** 2 / (100 * 200 * 70 * 230)
    assert result.loc[0, "test"] == "chi2" and result.loc[0, "p_value"] == pytest.approx(chi2.sf(statistic, 1))
    p = result["p_value"].to_numpy()
    ranks = p.argsort().argsort() + 1
    bh = np.minimum.accumulate((p * 3 / ranks)[np.argsort(-p)])[np.argsort(np.argsort(-p))]
    assert result["q_value"].tolist() == pytest.approx(np.minimum(bh, 1).tolist())


def test_enrichment_without_background_is_undefined():
    result = exon_enrichment(np.array([5, 7]), np.array([0, 0]))
    assert result["p_value"].isna().all() and result["test"].tolist() == ["none", "none"]


def test_codon_boundaries_counted_in_frame_from_the_cds_start(hand_tokenizer):
    tally = TokenTally(hand_tokenizer)
    # ATG|ATG|A: boundaries at 3 and 6 (frame 0). The next segment starts 7 CDS bases in: T|G|ATG puts its
    # boundaries at CDS positions 8 (frame 2) and 9 (frame 0).
    tally.add(region_frame([("cds", "ATGATGA", 0), ("cds", "TGATG", 7)]))
    codon = tally.report().codon_frame.iloc[0]
    assert (codon["boundaries_frame_0"], codon["boundaries_frame_1"], codon["boundaries_frame_2"]) == (3, 0, 1)
    assert codon["n_cds_regions"] == 2 and codon["share_at_codon_boundary"] == 0.75
    # Binomial(4, 1/3): P(3) = 8/81, and the tables as unlikely are 3 and 4 (1/81): p = 9/81.
    assert codon["binomial_p_value"] == pytest.approx(1 / 9)


def test_codon_frame_without_boundaries_is_undefined():
    codon = codon_frame_test(np.zeros(3, dtype=np.int64), 0).iloc[0]
    assert codon["n_boundaries"] == 0 and np.isnan(codon["share_at_codon_boundary"])
    assert np.isnan(codon["binomial_p_value"])


def test_large_inputs_are_tokenized_in_batches(hand_tokenizer, monkeypatch):
    monkeypatch.setattr("kb_assets.diagnostics.tokens.BATCH_BASES", 10)
    tally = TokenTally(hand_tokenizer)
    tally.add(region_frame([("exon", "GC" * 4, 0)] * 3 + [("cds", "ATGATG", 0), ("cds", "ATG", 6)]))
    report = tally.report()
    assert report.tokens.set_index("token").loc["GC", "count"] == 12
    assert report.codon_frame.iloc[0]["boundaries_frame_0"] == 1
