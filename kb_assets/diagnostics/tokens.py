"""BPE token report: how the frozen DNABERT-2 tokenizer cuts the gene set's DNA, by region type.

Region types of each gene-set gene's canonical (chosen) transcript, each region read on the transcribed strand
(reverse-complemented on the minus strand) and tokenized on its own, as the model sees a region:

    exon      the exons
    utr       the UTR parts of the exons (GTF UTR features)
    cds       the CDS parts of the exons
    intron    the gaps between consecutive exons
    promoter  the regions.promoter_upstream bases 5' of the TSS (none when that is 0)

utr and cds lie inside exon, so token frequencies and the enrichment count exon, intron and promoter (disjoint);
utr and cds have their own bp per token and token lengths, and cds answers the codon-frame question.

- bp_per_token per region type: bases / tokens; token length distribution: tokens by the bases each covers.
- enrichment in exons vs background (introns and promoters): per token the 2×2 table (this token, other tokens) ×
  (exon, background); log odds ratio (natural log) with 0.5 added to every cell (Haldane–Anscombe, finite when a
  cell is 0); the p-value of Pearson's chi-square test (1 df) where every expected count is ≥ 5 and of Fisher's
  exact test otherwise (Cochran's rule: the chi-square approximation fails for rare tokens, and Fisher's test is too
  slow to run on every token); q-values by Benjamini–Hochberg over every tested token.
- codon frame: a token boundary inside a CDS segment (between two tokens; the segment's own ends are the
  annotation's, not the tokenizer's) has frame (CDS bases 5' of it, counted from the CDS start over the
  transcript's CDS segments in transcription order) mod 3. Frame 0 boundaries fall between codons; boundaries
  placed regardless of the frame would put a third there: the share is compared with 1/3 by a two-sided exact
  binomial test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2, fisher_exact
from statsmodels.stats.multitest import multipletests

from kb_assets.encoders import DnaTokenizer
from kb_assets.genome import Annotation, ReferenceGenome, extract_regions, reverse_complement

REGION_TYPES = ("exon", "utr", "cds", "intron", "promoter")
BACKGROUND = ("intron", "promoter")
COUNTED = ("exon", *BACKGROUND)
CODON_CHANCE = 1 / 3
MIN_EXPECTED_FOR_CHI_SQUARE = 5
# Sequences are tokenized in batches of about this many bases, so a chromosome's introns never sit in memory as
# token objects all at once.
BATCH_BASES = 4_000_000
REGION_COLUMNS = ["gene_id", "gene_name", "region_type", "region_index", "start", "end", "strand", "sequence",
                  "cds_offset"]


@dataclass(frozen=True)
class TokenReport:
    tokens: pd.DataFrame  # one row per token seen in exon/intron/promoter: counts, length, enrichment
    region_types: pd.DataFrame  # one row per region type present: n_regions, bp, tokens, bp_per_token
    token_lengths: pd.DataFrame  # region_type × length_bp: count, share (of the region type's tokens)
    codon_frame: pd.DataFrame  # one row: boundaries per frame, share at codon boundaries, binomial p-value


def region_type_sequences(genome: ReferenceGenome, annotation: Annotation, genes: pd.DataFrame, chrom: str,
                          promoter_upstream: int) -> pd.DataFrame:
    """The region-type sequences (module doc) of the resolved gene set's genes on `chrom`: REGION_COLUMNS, where
    cds_offset is, for a cds region, the transcript's CDS bases 5' of it (0 elsewhere)."""
    genes = genes[genes["chrom"] == chrom]
    if genes.empty:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in REGION_COLUMNS})
    exons = extract_regions(genome, annotation, genes, chrom, "exons")
    cds = extract_regions(genome, annotation, genes, chrom, "cds")
    # extract_regions lists a transcript's CDS segments in transcription order.
    cds = cds.assign(cds_offset=cds.groupby("gene_id")["length"].cumsum() - cds["length"])
    parts = [exons.assign(region_type="exon"), cds.assign(region_type="cds")]
    if promoter_upstream > 0:
        promoter = extract_regions(genome, annotation, genes, chrom, "promoter",
                                   promoter_upstream=promoter_upstream, promoter_downstream=0)
        parts.append(promoter.assign(region_type="promoter"))
    transcripts = genes[["gene_id", "gene_name", "transcript_id", "strand"]]
    utrs = transcripts.merge(annotation.utrs[["transcript_id", "exon_number", "start", "end"]], on="transcript_id")
    parts.append(_read(genome, chrom, utrs.rename(columns={"exon_number": "region_index"})).assign(region_type="utr"))
    parts.append(_read(genome, chrom, _introns(transcripts, annotation.exons)).assign(region_type="intron"))
    regions = pd.concat(parts, ignore_index=True)
    regions["cds_offset"] = regions["cds_offset"].fillna(0).astype("int64")
    return regions.loc[regions["end"] > regions["start"], REGION_COLUMNS].reset_index(drop=True)


def _introns(transcripts: pd.DataFrame, exons: pd.DataFrame) -> pd.DataFrame:
    """The gaps between consecutive exons of each transcript, numbered in transcription order."""
    spans = transcripts.merge(exons[["transcript_id", "start", "end"]], on="transcript_id").sort_values(
        ["transcript_id", "start"])
    next_start = spans.groupby("transcript_id")["start"].shift(-1)
    introns = spans.assign(start=spans["end"], end=next_start).dropna(subset=["end"])
    introns = introns.assign(end=introns["end"].astype("int64"))
    introns = introns[introns["end"] > introns["start"]]
    upstream_first = introns["start"].where(introns["strand"] == "+", -introns["start"])
    introns = introns.assign(upstream_first=upstream_first).sort_values(["transcript_id", "upstream_first"])
    return introns.assign(region_index=introns.groupby("transcript_id").cumcount() + 1).drop(columns="upstream_first")


def _read(genome: ReferenceGenome, chrom: str, intervals: pd.DataFrame) -> pd.DataFrame:
    sequences = [genome.fetch(chrom, start, end) for start, end in zip(intervals["start"], intervals["end"])]
    return intervals.assign(sequence=[reverse_complement(s) if strand == "-" else s
                                      for s, strand in zip(sequences, intervals["strand"])])


class TokenTally:
    """Token statistics accumulated over region-type sequences (`add` one chromosome at a time), then `report`."""

    def __init__(self, tokenizer: DnaTokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.vocab_size
        self.counts = {t: np.zeros(vocab, dtype=np.int64) for t in REGION_TYPES}
        self.length_counts = {t: Counter() for t in REGION_TYPES}
        self.token_bases = np.zeros(vocab, dtype=np.int64)  # bases a token covers ([UNK]: the one it replaces)
        self.n_regions = Counter()
        self.bases = Counter()
        self.frames = np.zeros(3, dtype=np.int64)

    def add(self, regions: pd.DataFrame) -> None:
        """Count the tokens of `regions` (REGION_COLUMNS, e.g. from region_type_sequences)."""
        for region_type, group in regions.groupby("region_type", sort=False):
            sequences = group["sequence"].tolist()
            offsets = group["cds_offset"].to_numpy()
            for batch in _batches([len(s) for s in sequences]):
                encoded = self.tokenizer.encode_batch_with_offsets([sequences[i] for i in batch])
                self._count(region_type, encoded, offsets[batch] if region_type == "cds" else None)
            self.n_regions[region_type] += len(group)
            self.bases[region_type] += int(group["sequence"].str.len().sum())

    def _count(self, region_type: str, encoded: list, cds_offsets: np.ndarray | None) -> None:
        ids = np.fromiter((i for token_ids, _ in encoded for i in token_ids), dtype=np.int64)
        spans = np.array([span for _, token_spans in encoded for span in token_spans], dtype=np.int64).reshape(-1, 2)
        lengths = spans[:, 1] - spans[:, 0]
        self.counts[region_type] += np.bincount(ids, minlength=len(self.token_bases))
        self.length_counts[region_type].update(dict(zip(*np.unique(lengths, return_counts=True))))
        np.maximum.at(self.token_bases, ids, lengths)
        if cds_offsets is not None:
            for (_, token_spans), cds_offset in zip(encoded, cds_offsets):
                boundaries = np.array([end for _, end in token_spans[:-1]], dtype=np.int64)
                self.frames += np.bincount((cds_offset + boundaries) % 3, minlength=3)

    def report(self) -> TokenReport:
        counted = sum(self.counts[t] for t in COUNTED)
        background = sum(self.counts[t] for t in BACKGROUND)
        seen = np.flatnonzero(counted)
        tokens = pd.DataFrame({
            "token_id": seen,
            "token": [self.tokenizer.id_to_token(int(i)) for i in seen],
            "length_bp": self.token_bases[seen],
            "count": counted[seen],
            "share": counted[seen] / max(int(counted.sum()), 1),
            "count_exon": self.counts["exon"][seen],
            "count_background": background[seen],
        })
        tokens = pd.concat([tokens, exon_enrichment(tokens["count_exon"].to_numpy(),
                                                    tokens["count_background"].to_numpy())], axis=1)
        tokens = tokens.sort_values(["count", "token_id"], ascending=[False, True], ignore_index=True)
        tokens.insert(0, "rank", np.arange(1, len(tokens) + 1))
        return TokenReport(tokens=tokens, region_types=self._region_types(), token_lengths=self._token_lengths(),
                           codon_frame=codon_frame_test(self.frames, int(self.n_regions["cds"])))

    def _region_types(self) -> pd.DataFrame:
        present = [t for t in REGION_TYPES if self.n_regions[t]]
        tokens = [int(self.counts[t].sum()) for t in present]
        bases = [self.bases[t] for t in present]
        return pd.DataFrame({
            "region_type": present,
            "n_regions": [self.n_regions[t] for t in present],
            "bp": bases,
            "tokens": tokens,
            "bp_per_token": [b / n if n else float("nan") for b, n in zip(bases, tokens)],
        })

    def _token_lengths(self) -> pd.DataFrame:
        rows = [
            {"region_type": t, "length_bp": int(length), "count": int(count)}
            for t in REGION_TYPES for length, count in sorted(self.length_counts[t].items())
        ]
        frame = pd.DataFrame(rows, columns=["region_type", "length_bp", "count"])
        return frame.assign(share=frame["count"] / frame.groupby("region_type")["count"].transform("sum"))


def token_length_shares(counts: Counter, tokenizer: DnaTokenizer, label: str) -> pd.DataFrame:
    """Share of counted tokens (token id → count) by the bases each token covers, labelled as one region type: the
    token length plot's table. An [UNK] stands for the one base it replaced, not for the five letters of its name."""
    lengths: Counter = Counter()
    for token_id, count in counts.items():
        lengths[1 if token_id in tokenizer.unk_ids else len(tokenizer.id_to_token(token_id))] += count
    total = sum(lengths.values()) or 1
    return pd.DataFrame({"region_type": label, "length_bp": sorted(lengths),
                         "share": [lengths[n] / total for n in sorted(lengths)]})


def _batches(lengths: list[int]) -> list[list[int]]:
    batches: list[list[int]] = [[]]
    bases = 0
    for index, length in enumerate(lengths):
        if batches[-1] and bases + length > BATCH_BASES:
            batches.append([])
            bases = 0
        batches[-1].append(index)
        bases += length
    return batches if batches[0] else []


def exon_enrichment(exon: np.ndarray, background: np.ndarray) -> pd.DataFrame:
    """Per token (counts aligned by token): log_odds_exon, p_value, test ("chi2" | "fisher") and q_value (BH),
    as the module doc defines them; all NaN (test "none") when exons or background hold no token."""
    exon = np.asarray(exon, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    exon_total, background_total = exon.sum(), background.sum()
    n = len(exon)
    if exon_total == 0 or background_total == 0:
        nan = np.full(n, np.nan)
        return pd.DataFrame({"log_odds_exon": nan, "p_value": nan, "test": ["none"] * n, "q_value": nan})
    a, b = exon, exon_total - exon  # exon row: this token, other tokens
    c, d = background, background_total - background  # background row
    log_odds = np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
    total = exon_total + background_total
    token_total, other_total = a + c, b + d
    smallest_expected = np.minimum(exon_total, background_total) * np.minimum(token_total, other_total) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = total * (a * d - b * c) ** 2 / (exon_total * background_total * token_total * other_total)
    # A token that is every token of both rows has no 2×2 table to test (other_total 0): p = 1.
    p_value = np.where(other_total > 0, chi2.sf(statistic, df=1), 1.0)
    use_fisher = (smallest_expected < MIN_EXPECTED_FOR_CHI_SQUARE) & (other_total > 0)
    for i in np.flatnonzero(use_fisher):
        p_value[i] = fisher_exact([[a[i], b[i]], [c[i], d[i]]]).pvalue
    q_value = multipletests(p_value, method="fdr_bh")[1] if n else p_value
    return pd.DataFrame({"log_odds_exon": log_odds, "p_value": p_value,
                         "test": np.where(use_fisher, "fisher", "chi2"), "q_value": q_value})


def codon_frame_test(frames: np.ndarray, n_cds_regions: int) -> pd.DataFrame:
    """One row: boundaries per frame (0 = between codons), the share in frame 0, the chance share 1/3 and the
    two-sided exact binomial p-value of that share against it (NaN without boundaries)."""
    frames = np.asarray(frames, dtype=np.int64)
    n = int(frames.sum())
    return pd.DataFrame([{
        "n_cds_regions": n_cds_regions,
        "n_boundaries": n,
        "boundaries_frame_0": int(frames[0]),
        "boundaries_frame_1": int(frames[1]),
        "boundaries_frame_2": int(frames[2]),
        "share_at_codon_boundary": frames[0] / n if n else float("nan"),
        "chance_share": CODON_CHANCE,
        "binomial_p_value": binomtest(int(frames[0]), n, CODON_CHANCE).pvalue if n else float("nan"),
    }])
