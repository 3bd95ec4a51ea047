"""Region extraction: the sequences of the gene set's regions on one chromosome, on the transcribed strand."""

from __future__ import annotations

import pandas as pd

from kb_assets.errors import InputError
from kb_assets.genome.annotation import Annotation
from kb_assets.genome.fasta import ReferenceGenome
from kb_assets.genome.sequence import reverse_complement

REGION_MODES = ("exons", "gene_body", "cds", "promoter")
REGION_DTYPES = {
    "gene_order": "int64",
    "gene_id": "str",
    "gene_name": "str",
    "transcript_id": "str",
    "region_id": "str",
    "region_index": "int64",
    "chrom": "str",
    "start": "int64",
    "end": "int64",
    "strand": "str",
    "sequence": "str",
    "length": "int64",
    "non_acgt_count": "int64",
}
_SHOWN = 5


def extract_regions(
    genome: ReferenceGenome,
    annotation: Annotation,
    genes: pd.DataFrame,
    chrom: str,
    mode: str,
    promoter_upstream: int = 2000,
    promoter_downstream: int = 500,
) -> pd.DataFrame:
    """The regions of the resolved gene set's genes on `chrom`, one row per region (columns: REGION_DTYPES).

    Modes: `exons` / `cds` of the chosen transcript (region_index = exon_number, 5'→3'), `gene_body`, and
    `promoter` (the chosen transcript's TSS, `promoter_upstream` bases 5' of it and `promoter_downstream` bases
    from it 3'-ward on the gene's strand, clipped at the contig ends). Sequences are uppercase and read on the
    gene's strand. Genes that yield no region (no CDS, no transcript) are left out and listed in
    `result.attrs["skipped"]` as gene_id → reason. A region past the contig end raises InputError.
    """
    if mode not in REGION_MODES:
        raise ValueError(f"mode must be one of {REGION_MODES}, got {mode!r}")
    on_chrom = genes.loc[genes.chrom == chrom, ["gene_order", "gene_id", "gene_name", "transcript_id", "strand",
                                                "start", "end"]]
    if mode in ("exons", "cds"):
        parts = annotation.exons if mode == "exons" else annotation.cds
        regions = on_chrom.drop(columns=["start", "end"]).merge(
            parts[["transcript_id", "exon_number", "start", "end"]], on="transcript_id"
        ).rename(columns={"exon_number": "region_index"})
    elif mode == "gene_body":
        regions = on_chrom.assign(region_index=1)
    else:
        regions = _promoters(genome, annotation, on_chrom, chrom, promoter_upstream, promoter_downstream)
    regions = regions.assign(chrom=chrom).sort_values(["gene_order", "region_index"], kind="stable")
    _check_within_contig(genome, annotation, regions, chrom)

    sequences = [genome.fetch(chrom, start, end) for start, end in zip(regions.start, regions.end)]
    regions["sequence"] = pd.Series(
        [reverse_complement(seq) if strand == "-" else seq for seq, strand in zip(sequences, regions.strand)],
        index=regions.index,
        dtype="str",
    )
    regions["region_id"] = regions.gene_id + f":{mode}:" + regions.region_index.astype(str)
    regions["length"] = regions.end - regions.start
    # N and every other non-ACGT (IUPAC) base: each becomes one [UNK] token that carries no sequence.
    regions["non_acgt_count"] = regions.sequence.str.count("[^ACGT]")
    result = regions[list(REGION_DTYPES)].astype(REGION_DTYPES).reset_index(drop=True)
    missing = on_chrom[~on_chrom.gene_id.isin(result.gene_id)]
    reason = "transcript has no CDS" if mode == "cds" else "transcript has no exons"
    result.attrs["skipped"] = {
        gene.gene_id: reason if isinstance(gene.transcript_id, str) else "gene has no transcript"
        for gene in missing.itertuples()
    }
    return result


def _promoters(
    genome: ReferenceGenome, annotation: Annotation, genes: pd.DataFrame, chrom: str, upstream: int, downstream: int
) -> pd.DataFrame:
    if genes.empty:
        return genes.assign(region_index=1)
    spans = annotation.transcripts.set_index("transcript_id")
    plus = genes.strand == "+"
    # The TSS is the chosen transcript's 5' end; a gene without a transcript falls back to its own 5' end.
    tx_start = genes.transcript_id.map(spans.start).fillna(genes.start).astype("int64")
    tx_end = genes.transcript_id.map(spans.end).fillna(genes.end).astype("int64")
    start = (tx_start - upstream).where(plus, tx_end - downstream)
    end = (tx_start + downstream).where(plus, tx_end + upstream)
    return genes.assign(start=start.clip(lower=0), end=end.clip(upper=genome.length(chrom)), region_index=1)


def _check_within_contig(genome: ReferenceGenome, annotation: Annotation, regions: pd.DataFrame, chrom: str) -> None:
    if regions.empty:
        return
    length = genome.length(chrom)
    outside = regions[(regions.start < 0) | (regions.end > length)]
    if len(outside):
        listed = ", ".join(
            f"{row.gene_name} {row.chrom}:{row.start}-{row.end}" for row in outside.head(_SHOWN).itertuples()
        )
        raise InputError(
            genome.path,
            listed,
            f"{len(outside)} region(s) of {annotation.source.name} run past the end of {chrom} (length {length})",
            "use a FASTA of the same genome build as the annotation (e.g. GRCh38 with GENCODE's GRCh38 GTF)",
        )
