"""Contig naming: the recipe's chromosomes, the GTF and the VCF must name contigs as the FASTA does.

GENCODE and UCSC write 'chr1' and 'chrM', Ensembl '1' and 'MT'. A name on the other convention is found by
respelling it, and every mismatch among the inputs is reported in one error, each with its fix, so a user never
fixes one file only to meet the next mismatch on the following run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cyvcf2
import pandas as pd

from kb_assets.errors import InputError
from kb_assets.genome.annotation import Annotation, leading_contigs
from kb_assets.genome.bgzf import is_gzip
from kb_assets.genome.fasta import ReferenceGenome

_SHOWN = 5


@dataclass(frozen=True)
class ContigMismatch:
    """One naming problem: where it is (file, record; label in a combined message), what it is, its fix."""

    file: Path
    record: str
    label: str
    problem: str
    fix: str


def check_contig_names(
    genome: ReferenceGenome,
    chromosomes: list[str],
    gtf: str | os.PathLike | Annotation,
    vcf: str | os.PathLike | None = None,
) -> None:
    """Raise one InputError listing every way the recipe's chromosomes, the GTF and the VCF name contigs unlike
    the FASTA, each with its fix.

    Every chromosome must be a FASTA contig; a GTF or VCF contig the FASTA spells otherwise ('chr1' vs '1',
    'chrM' vs 'MT') is a mismatch. `gtf`: the parsed annotation, whose every contig is compared, or the GTF's
    path, whose first records show its convention without reading the whole file. The VCF's contigs come from
    its header (or its index).
    """
    respelled = respell_contigs([name for name in chromosomes if name not in genome.contigs], list(genome.contigs))
    parsed = isinstance(gtf, Annotation)
    gtf_path = gtf.source if parsed else Path(gtf)
    gtf_names = list(gtf.genes.chrom.unique()) if parsed else leading_contigs(gtf_path)
    gtf_mismatches = _gtf_mismatches(genome, gtf_path, gtf_names, complete=parsed)
    mismatches = _recipe_mismatches(genome, chromosomes, respelled) + gtf_mismatches
    agreeing = [name for name in [*chromosomes, *gtf_names] if name in genome.contigs]
    if vcf is not None:
        vcf_names = vcf_contigs(vcf)
        wanted = [respelled.get(name, name) for name in chromosomes if respelled.get(name, name) in genome.contigs]
        mismatches += vcf_mismatches(genome, Path(vcf), vcf_names, wanted)
        agreeing += [name for name in wanted if name in vcf_names]
    # The recipe and the GTF (and the VCF, where it names these contigs) agree among themselves, not with the FASTA.
    fasta_alone = bool(respelled and gtf_mismatches) and not agreeing
    fasta_rename = _fasta_rename_command(genome.path, next(iter(respelled))) if fasta_alone else None
    raise_contig_mismatches(genome, mismatches, fasta_rename)


def check_genes_on_chromosomes(annotation: Annotation, chromosomes: list[str], genes: pd.DataFrame) -> None:
    """Raise one InputError unless every gene of the resolved gene set lies on one of the chromosomes, so none is
    silently left out."""
    outside = genes[~genes.chrom.isin(chromosomes)]
    if len(outside):
        listed = [f"{gene.gene_name} ({gene.chrom})" for gene in outside.head(_SHOWN).itertuples()]
        raise InputError(
            annotation.source,
            ", ".join(listed) + (f" and {len(outside) - _SHOWN} more" if len(outside) > _SHOWN else ""),
            f"{len(outside)} gene-set gene(s) lie on chromosomes not in reference.chromosomes",
            "add their chromosomes to reference.chromosomes or remove the genes from the gene set",
        )


def vcf_contigs(path: str | os.PathLike) -> list[str]:
    """The contigs the VCF's header declares (else those of its index); none when htslib cannot open it, whose
    reason the VCF's own checks give when its records are read."""
    try:
        return list(cyvcf2.VCF(str(path), lazy=True).seqnames)
    except OSError:
        return []


def vcf_mismatches(
    genome: ReferenceGenome, path: Path, vcf_names: list[str], fasta_names: list[str]
) -> list[ContigMismatch]:
    """The VCF's naming mismatch for the FASTA contigs `fasta_names`: those it spells another way."""
    respelled = respell_contigs([name for name in fasta_names if name not in vcf_names], vcf_names)
    if not respelled:
        return []
    fasta_example, vcf_example = next(iter(respelled.items()))
    pairs = "".join(f"{vcf_name} {fasta_name}\\n" for fasta_name, vcf_name in respelled.items())
    return [ContigMismatch(
        path, "contig names", path.name,
        f"the VCF and the FASTA ({genome.path.name}) name contigs differently: the VCF writes {vcf_example!r} "
        f"where the FASTA writes {fasta_example!r}",
        f"rename the VCF's contigs to the FASTA's: printf '{pairs}' > map.txt && bcftools annotate "
        f"--rename-chrs map.txt -Oz -W -o renamed.vcf.gz {path.name}",
    )]


def raise_contig_mismatches(
    genome: ReferenceGenome, mismatches: list[ContigMismatch], fasta_rename: str | None = None
) -> None:
    """Raise the mismatches as one InputError: one alone as itself, several numbered with their fixes.
    `fasta_rename`: a command renaming the FASTA's contigs, offered first when that one change fixes them all."""
    if not mismatches:
        return
    if len(mismatches) == 1:
        [mismatch] = mismatches
        raise InputError(mismatch.file, mismatch.record, mismatch.problem, mismatch.fix)
    each = "; ".join(f"({number}) {mismatch.fix}" for number, mismatch in enumerate(mismatches, 1))
    raise InputError(
        genome.path,
        "contig names",
        f"{len(mismatches)} contig naming mismatches with the FASTA: " + "; ".join(
            f"({number}) {mismatch.label}: {mismatch.problem}" for number, mismatch in enumerate(mismatches, 1)),
        f"rename the FASTA's contigs, one change that fixes all of them: {fasta_rename}, then point inputs.fasta "
        f"at the renamed file; or fix each: {each}" if fasta_rename else each,
    )


def respell_contigs(names: list[str], candidates: list[str]) -> dict[str, str]:
    """name → the candidate naming the same contig another way (chr1/1, chrM/MT), for the names that have one."""
    by_plain = {_plain_name(candidate): candidate for candidate in candidates}
    return {name: by_plain[_plain_name(name)] for name in names if _plain_name(name) in by_plain}


def _recipe_mismatches(
    genome: ReferenceGenome, chromosomes: list[str], respelled: dict[str, str]
) -> list[ContigMismatch]:
    mismatches = []
    if respelled:
        listed = ", ".join(f"{name!r} → {respelled[name]!r}" for name in list(respelled)[:_SHOWN])
        as_fasta = ", ".join(respelled.get(name, name) for name in chromosomes)
        mismatches.append(ContigMismatch(
            genome.path, "reference.chromosomes", "reference.chromosomes",
            f"the recipe names chromosomes differently from the FASTA ({listed})",
            f"list reference.chromosomes as the FASTA names them: [{as_fasta}]",
        ))
    missing = [name for name in chromosomes if name not in genome.contigs and name not in respelled]
    if missing:
        mismatches.append(ContigMismatch(
            genome.path, ", ".join(missing), f"reference.chromosomes {', '.join(missing)}",
            f"chromosome(s) not in the FASTA (it has {_sample(list(genome.contigs))})",
            "remove them from reference.chromosomes or use a FASTA of the whole assembly",
        ))
    return mismatches


def _gtf_mismatches(genome: ReferenceGenome, path: Path, gtf_names: list[str], complete: bool) -> list[ContigMismatch]:
    respelled = respell_contigs([name for name in gtf_names if name not in genome.contigs], list(genome.contigs))
    if not respelled:
        return []
    gtf_example, fasta_example = next(iter(respelled.items()))
    # Only a parsed GTF gives all its contigs; its first records give the convention alone.
    counted = f" ({len(respelled)} contig(s): {_sample(list(respelled))})" if complete else ""
    return [ContigMismatch(
        path, "contig names", path.name,
        f"the GTF and the FASTA ({genome.path.name}) name contigs differently: the GTF writes {gtf_example!r} "
        f"where the FASTA writes {fasta_example!r}{counted}",
        "use a GTF and FASTA from the same source (GENCODE with GENCODE/UCSC, Ensembl with Ensembl), "
        f"or rename the GTF's contigs: {_gtf_rename_command(path, fasta_example)}",
    )]


def _plain_name(name: str) -> str:
    """A contig name without naming conventions: chr1 and 1 → 1; chrM and MT → M."""
    bare = re.sub(r"^chr", "", name, flags=re.IGNORECASE)
    return "M" if bare.upper() == "MT" else bare


def _gtf_rename_command(path: Path, fasta_example: str) -> str:
    """Renames the GTF's contigs to the convention of `fasta_example` (how the FASTA names one)."""
    if fasta_example.lower().startswith("chr"):
        sed = r"sed -E 's/^MT\t/chrM\t/; s/^([0-9]+|X|Y)\t/chr\1\t/'"
    else:
        sed = r"sed -E 's/^chrM\t/MT\t/; s/^chr//'"
    return f"zcat {path.name} | {sed} | gzip > renamed.gtf.gz" if is_gzip(path) else f"{sed} {path.name} > renamed.gtf"


def _fasta_rename_command(path: Path, other_example: str) -> str:
    """Renames the FASTA's primary contigs to the convention of `other_example` (how the other inputs name one)."""
    if other_example.lower().startswith("chr"):
        sed = r"sed -E 's/^>MT\b/>chrM/; s/^>([0-9]+|X|Y)\b/>chr\1/'"
    else:
        sed = r"sed -E 's/^>chrM\b/>MT/; s/^>chr([0-9]+|X|Y)\b/>\1/'"
    return f"zcat {path.name} | {sed} | bgzip > renamed.fa.gz" if is_gzip(path) else f"{sed} {path.name} > renamed.fa"


def _sample(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", … ({len(names)} in all)" if len(names) > _SHOWN else "")
