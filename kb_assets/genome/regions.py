"""Region extraction: the sequences of the gene set's regions on one chromosome, on the transcribed strand."""

from __future__ import annotations

import re

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


def check_chromosomes_in_fasta(genome: ReferenceGenome, chromosomes: list[str]) -> None:
    """Raise one InputError unless every chromosome is a FASTA contig; a respelling ('1' for 'chr1') is named."""
    fasta_names = list(genome.contigs)
    not_in_fasta = [name for name in chromosomes if name not in genome.contigs]
    fasta_spelling = respell_contigs(not_in_fasta, fasta_names)
    if fasta_spelling:
        listed = ", ".join(f"{name!r} → {fasta_spelling[name]!r}" for name in list(fasta_spelling)[:_SHOWN])
        raise InputError(
            genome.path,
            "reference.chromosomes",
            f"the recipe names chromosomes differently from the FASTA ({listed})",
            "list reference.chromosomes as the FASTA and the GTF name them",
        )
    if not_in_fasta:
        raise InputError(
            genome.path,
            ", ".join(not_in_fasta),
            f"chromosome(s) not in the FASTA (it has {_sample(fasta_names)})",
            "remove them from reference.chromosomes or use a FASTA of the whole assembly",
        )


def check_contig_names(
    genome: ReferenceGenome, annotation: Annotation, chromosomes: list[str], genes: pd.DataFrame | None = None
) -> None:
    """Raise one InputError unless the chromosomes, the FASTA and the GTF name contigs alike.

    Every chromosome must be a FASTA contig; a chromosome the GTF spells differently ('chr1' vs '1',
    'chrM' vs 'MT') is a naming mismatch. With `genes` (a resolved gene set), every gene must lie on one of
    the chromosomes, so none is silently left out.
    """
    check_chromosomes_in_fasta(genome, chromosomes)
    gtf_names = list(annotation.genes.chrom.unique())
    gtf_spelling = respell_contigs([name for name in chromosomes if name not in gtf_names], gtf_names)
    if gtf_spelling:
        fasta_example, gtf_example = next(iter(gtf_spelling.items()))
        raise InputError(
            annotation.source,
            "contig names",
            f"the GTF and the FASTA ({genome.path.name}) name contigs differently: the GTF writes "
            f"{gtf_example!r} where the FASTA writes {fasta_example!r} "
            f"({len(gtf_spelling)} contig(s): {_sample(list(gtf_spelling.values()))})",
            "use a GTF and FASTA from the same source (GENCODE with GENCODE/UCSC, Ensembl with Ensembl), "
            f"or rename the GTF's contigs: {_rename_command(fasta_example)}",
        )
    if genes is not None:
        outside = genes[~genes.chrom.isin(chromosomes)]
        if len(outside):
            listed = [f"{gene.gene_name} ({gene.chrom})" for gene in outside.head(_SHOWN).itertuples()]
            raise InputError(
                annotation.source,
                ", ".join(listed) + (f" and {len(outside) - _SHOWN} more" if len(outside) > _SHOWN else ""),
                f"{len(outside)} gene-set gene(s) lie on chromosomes not in reference.chromosomes",
                "add their chromosomes to reference.chromosomes or remove the genes from the gene set",
            )


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


def _plain_name(name: str) -> str:
    """A contig name without naming conventions: chr1 and 1 → 1; chrM and MT → M."""
    bare = re.sub(r"^chr", "", name, flags=re.IGNORECASE)
    return "M" if bare.upper() == "MT" else bare


def respell_contigs(names: list[str], candidates: list[str]) -> dict[str, str]:
    """name → the candidate naming the same contig another way (chr1/1, chrM/MT), for the names that have one."""
    by_plain = {_plain_name(candidate): candidate for candidate in candidates}
    return {name: by_plain[_plain_name(name)] for name in names if _plain_name(name) in by_plain}


def _rename_command(fasta_example: str) -> str:
    if fasta_example.lower().startswith("chr"):
        return r"zcat in.gtf.gz | sed -E 's/^MT\t/chrM\t/; s/^([0-9]+|X|Y)\t/chr\1\t/' | gzip > renamed.gtf.gz"
    return r"zcat in.gtf.gz | sed -E 's/^chrM\t/MT\t/; s/^chr//' | gzip > renamed.gtf.gz"


def _sample(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", … ({len(names)} in all)" if len(names) > _SHOWN else "")
