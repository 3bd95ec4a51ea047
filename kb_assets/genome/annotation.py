"""Gene annotation from a GENCODE/Ensembl GTF: genes, transcripts, exons, CDS and UTRs as pandas tables.

The GTF is parsed once with `pyranges.read_gtf`; everything after that is vectorised pandas. Coordinates are
0-based half-open throughout (pyranges converts the GTF's 1-based inclusive starts).

Decisions:
- `gene_id` is required on every line and `transcript_id` on transcript, exon, CDS and UTR lines.
- A gene without `gene_name` (Ensembl GTFs have such genes; a whole file may lack the attribute) is named by
  its gene_id; `Annotation.unnamed_genes` counts them so callers can report it.
- A gene without a `gene` line (UCSC-style GTFs) or a transcript without a `transcript` line gets the span of
  its transcripts or exons.
- `exon_number` is taken from the file; where it is missing it is counted in transcription order.
- Ensembl spellings are accepted: gene_biotype/transcript_biotype, five_prime_utr/three_prime_utr.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyranges as pr

from kb_assets.errors import InputError
from kb_assets.genome.bgzf import is_gzip

UTR_FEATURES = ("UTR", "five_prime_utr", "three_prime_utr")
_PART_FEATURES = ("exon", "CDS", *UTR_FEATURES)
_TRANSCRIPT_FEATURES = ("transcript", *_PART_FEATURES)
_GENCODE_VERSION = re.compile(r"^##description:.*\bversion (\d+)\b")
# Strip a trailing .N version but keep GENCODE's _PAR_Y suffix: ENSG00000182378.14_PAR_Y → ENSG00000182378_PAR_Y.
ID_VERSION = re.compile(r"\.\d+(?=$|_PAR_Y$)")
_SHOWN = 5  # offending records quoted in an error
_CORE_COLUMNS = {"Chromosome": "chrom", "Feature": "feature", "Start": "start", "End": "end", "Strand": "strand"}

GENE_COLUMNS = ["gene_id", "gene_id_base", "gene_name", "gene_type", "chrom", "start", "end", "strand"]
TRANSCRIPT_COLUMNS = [
    "transcript_id", "gene_id", "transcript_name", "transcript_type", "chrom", "start", "end", "strand",
    "tags", "is_ensembl_canonical", "is_mane_select", "cds_length", "exon_length",
]
PART_COLUMNS = ["gene_id", "transcript_id", "exon_number", "chrom", "start", "end", "strand"]


@dataclass(frozen=True)
class Annotation:
    """Annotation tables (0-based half-open coordinates) and the annotation's version."""

    genes: pd.DataFrame  # GENE_COLUMNS
    transcripts: pd.DataFrame  # TRANSCRIPT_COLUMNS; tags ';'-joined
    exons: pd.DataFrame  # PART_COLUMNS, sorted by transcript_id, exon_number
    cds: pd.DataFrame  # PART_COLUMNS, sorted like exons
    utrs: pd.DataFrame  # PART_COLUMNS, sorted like exons
    version: str  # "GENCODE v46", else the file name
    source: Path
    unnamed_genes: int  # genes without gene_name, named by their gene_id


def strip_id_version(ids: pd.Series) -> pd.Series:
    """Ensembl ids without their .N version (ENSG00000141510.17 → ENSG00000141510)."""
    return ids.str.replace(ID_VERSION, "", regex=True)


def load_annotation(gtf_path: str | os.PathLike) -> Annotation:
    """Parse a GTF (plain or gzipped) into an Annotation; bad input raises one InputError."""
    path = Path(gtf_path)
    header = _read_header(path)
    try:
        with warnings.catch_warnings():
            # pyranges 0.1.x calls pandas APIs that pandas 3 deprecates; the noise is theirs, not the user's.
            warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
            gtf = pr.read_gtf(str(path), duplicate_attr=True, as_df=True)
    except Exception as err:  # pyranges signals unparseable lines with bare Exception/ValueError
        raise InputError(
            path,
            None,
            f"not a parseable GTF ({err})",
            'check that every line has 9 tab-separated columns with attributes written as key "value"; '
            "convert a GFF3 file to GTF first (e.g. `gffread -T`)",
        ) from err
    attributes = _wanted_attributes(gtf.columns)
    # An attribute no line carries comes back as float NaN; as text it fills and compares like the others.
    as_text = ["chrom", "feature", "strand", *attributes]
    gtf = gtf.reindex(columns=[*_CORE_COLUMNS, *attributes]).rename(columns=_CORE_COLUMNS)
    gtf = gtf.astype({name: "str" for name in as_text})
    gtf["line"] = gtf.index + len(header) + 1
    _check_required(path, gtf)

    genes, unnamed = _genes(gtf)
    exons = _parts(gtf[gtf.feature == "exon"])
    cds = _parts(gtf[gtf.feature == "CDS"])
    return Annotation(
        genes=genes,
        transcripts=_transcripts(gtf, exons, cds),
        exons=exons,
        cds=cds,
        utrs=_parts(gtf[gtf.feature.isin(UTR_FEATURES)]),
        version=_version(header, path),
        source=path,
        unnamed_genes=unnamed,
    )


def leading_contigs(gtf_path: str | os.PathLike, records: int = 1000) -> list[str]:
    """The distinct contigs of the GTF's first `records` feature lines: its naming convention, without reading the
    whole file (a missing, empty or non-GTF file raises the InputError load_annotation would)."""
    path = Path(gtf_path)
    header = _read_header(path)
    try:
        with (gzip.open(path, "rt") if is_gzip(path) else open(path)) as handle:
            lines = itertools.islice(handle, len(header), len(header) + records)
            return list(dict.fromkeys(line.split("\t", 1)[0] for line in lines))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(path, None, f"cannot read the GTF ({err})", "download or copy it again") from err


def _read_header(path: Path) -> list[str]:
    """The leading '#' lines; also rejects a missing, empty or non-GTF file before pyranges sees it."""
    if not path.is_file():
        raise InputError(path, None, "GTF file not found", "point inputs.gtf at an existing GTF file")
    header: list[str] = []
    try:
        with (gzip.open(path, "rt") if is_gzip(path) else open(path)) as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                header.append(line.rstrip("\r\n"))
            else:
                raise InputError(path, None, "the GTF holds no feature lines", "use a complete GTF annotation")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(path, None, f"cannot read the GTF ({err})", "download or copy it again") from err
    if len(line.split("\t")) != 9:
        raise InputError(
            path,
            f"line {len(header) + 1}",
            f"not a GTF line (expected 9 tab-separated columns): {line.rstrip()[:80]!r}",
            "point inputs.gtf at a GENCODE or Ensembl GTF",
        )
    return header


def _wanted_attributes(present: pd.Index) -> list[str]:
    # Ensembl writes *_biotype where GENCODE writes *_type; keep the biotype columns where the file has them.
    biotypes = [name for name in ("gene_biotype", "transcript_biotype") if name in present]
    return ["gene_id", "gene_name", "gene_type", "transcript_id", "transcript_name", "transcript_type",
            "exon_number", "tag", *biotypes]


def _check_required(path: Path, gtf: pd.DataFrame) -> None:
    needs_transcript = gtf.feature.isin(_TRANSCRIPT_FEATURES)
    problems = {
        "gene_id": gtf.gene_id.isna(),
        "transcript_id": needs_transcript & gtf.transcript_id.isna(),
        "a strand (+ or -)": gtf.feature.isin(("gene", *_TRANSCRIPT_FEATURES)) & ~gtf.strand.isin(("+", "-")),
    }
    for attribute, bad in problems.items():
        if bad.any():
            raise InputError(
                path,
                _describe_lines(gtf[bad]),
                f"{int(bad.sum())} line(s) lack {attribute}",
                "use an unmodified GENCODE/Ensembl GTF, or add the attribute to those lines",
            )
    for feature, key in (("gene", "gene_id"), ("transcript", "transcript_id")):
        rows = gtf[gtf.feature == feature]
        repeated = rows[rows[key].duplicated(keep=False)]
        if len(repeated):
            raise InputError(
                path,
                _describe_lines(repeated),
                f"{repeated[key].nunique()} {key}(s) have more than one {feature} line",
                f"keep one {feature} line per {key} (GENCODE marks PAR copies with a _PAR_Y suffix)",
            )


def _describe_lines(rows: pd.DataFrame) -> str:
    shown = [
        f"line {row.line} ({row.feature} {row.chrom}:{row.start + 1}-{row.end})"
        for row in rows.head(_SHOWN).itertuples()
    ]
    return ", ".join(shown) + (f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else "")


def _first_of(gtf: pd.DataFrame, *columns: str) -> pd.Series:
    """The first column that has a value, row by row (gene_type, else gene_biotype)."""
    values = gtf[columns[0]]
    for column in columns[1:]:
        if column in gtf:
            values = values.fillna(gtf[column])
    return values


def _span(rows: pd.DataFrame, key: str, carried: list[str]) -> pd.DataFrame:
    """One row per `key`: the min start and max end of its rows, and the first value of the carried columns."""
    aggregations = {"start": "min", "end": "max", **{column: "first" for column in carried}}
    return rows.groupby(key, sort=False, as_index=False).agg(aggregations)


def _genes(gtf: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    gtf = gtf.assign(gene_type=_first_of(gtf, "gene_type", "gene_biotype"))
    carried = ["chrom", "strand", "gene_name", "gene_type"]
    genes = gtf.loc[gtf.feature == "gene", ["gene_id", "start", "end", *carried]]
    lacking_line = gtf[gtf.feature.isin(_TRANSCRIPT_FEATURES) & ~gtf.gene_id.isin(genes.gene_id)]
    genes = pd.concat([genes, _span(lacking_line, "gene_id", carried)], ignore_index=True)
    unnamed = genes.gene_name.isna()
    genes["gene_name"] = genes.gene_name.fillna(genes.gene_id)
    genes["gene_id_base"] = strip_id_version(genes.gene_id)
    return genes[GENE_COLUMNS].reset_index(drop=True), int(unnamed.sum())


def _transcripts(gtf: pd.DataFrame, exons: pd.DataFrame, cds: pd.DataFrame) -> pd.DataFrame:
    gtf = gtf.assign(transcript_type=_first_of(gtf, "transcript_type", "transcript_biotype"))
    carried = ["gene_id", "transcript_name", "transcript_type", "chrom", "strand", "tag"]
    transcripts = gtf.loc[gtf.feature == "transcript", ["transcript_id", "start", "end", *carried]]
    lacking_line = gtf[gtf.feature.isin(_PART_FEATURES) & ~gtf.transcript_id.isin(transcripts.transcript_id)]
    transcripts = pd.concat([transcripts, _span(lacking_line, "transcript_id", carried)], ignore_index=True)
    # pyranges joins repeated attributes (GENCODE writes one `tag` per tag) with commas.
    transcripts["tags"] = transcripts.pop("tag").fillna("").str.replace(",", ";", regex=False)
    delimited = ";" + transcripts.tags + ";"
    transcripts["is_ensembl_canonical"] = delimited.str.contains(";Ensembl_canonical;", regex=False)
    transcripts["is_mane_select"] = delimited.str.contains(";MANE_Select;", regex=False)
    for name, parts in (("cds_length", cds), ("exon_length", exons)):
        lengths = (parts.end - parts.start).groupby(parts.transcript_id).sum()
        transcripts[name] = transcripts.transcript_id.map(lengths).fillna(0).astype("int64")
    return transcripts[TRANSCRIPT_COLUMNS].reset_index(drop=True)


def _parts(rows: pd.DataFrame) -> pd.DataFrame:
    """Exon-like rows sorted by transcript and exon_number; a missing exon_number is counted 5'→3'."""
    parts = rows[PART_COLUMNS].copy()
    numbers = pd.to_numeric(parts.exon_number, errors="coerce")
    if numbers.isna().any():
        # Transcription order: ascending start on the + strand, descending on the - strand.
        oriented = parts.start.where(parts.strand == "+", -parts.start)
        numbers = numbers.fillna(oriented.groupby(parts.transcript_id).rank(method="first"))
    parts["exon_number"] = numbers.astype("int64")
    parts = parts.sort_values(["transcript_id", "exon_number"], kind="stable")
    return parts.reset_index(drop=True)


def _version(header: list[str], path: Path) -> str:
    for line in header:
        if match := _GENCODE_VERSION.match(line):
            return f"GENCODE v{match.group(1)}"
    return path.name
