"""The ordered gene set: a TSV manifest read, then resolved to one annotation gene and transcript per entry."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from kb_assets.errors import InputError
from kb_assets.genome.annotation import ID_VERSION, Annotation, strip_id_version

ENSEMBL_GENE_ID = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?(_PAR_Y)?$")
RESOLVED_COLUMNS = [
    "gene_order", "query", "gene_id", "gene_name", "gene_type", "chrom", "start", "end", "strand",
    "transcript_id", "transcript_choice",
]
_SHOWN = 10  # unresolved entries quoted in an error
# First-column names that make a manifest's first line a header. No gene symbol or Ensembl id is one of these,
# so a plain list whose first line is a gene is never mistaken for a headed table, nor the reverse.
HEADER_NAMES = frozenset({"gene", "genes", "gene_name", "gene_symbol", "symbol", "hgnc_symbol", "gene_id",
                          "ensembl_gene_id", "ensembl_id", "name", "id"})


class GeneSetEntries(list):
    """The manifest's genes in file order, each with the line it is on as an editor numbers lines (from 1), so
    errors can say "line 20 of my_genes.tsv". Compares equal to the plain list of genes."""

    def __init__(self, entries: list[str], lines: list[int], path: str | os.PathLike):
        super().__init__(entries)
        self.lines = list(lines)
        self.path = Path(path)

    def position(self, index: int) -> str:
        return f"line {self.lines[index]} of {self.path.name}"


def read_gene_set(path: str | os.PathLike) -> GeneSetEntries:
    """Gene symbols or Ensembl ids from the manifest's first column (tab-separated), in file order.

    The first line is a header when its first column is a column name (`gene`, `symbol`, `gene_id` … in any
    case: see HEADER_NAMES), and otherwise the first gene: a plain list, one gene per line, needs no header.
    Blank lines and lines starting with '#' are skipped. An entry listed twice (Ensembl ids compared without
    their version) raises one InputError naming the line numbers of every repeat.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(path, None, "gene-set file not found", "point inputs.gene_set at an existing TSV") from None
    first_line: dict[str, int] = {}
    entries: list[str] = []
    numbers: list[int] = []
    repeats: list[str] = []
    header_checked = False
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        first = line.split("\t")[0].strip()
        if not header_checked:
            header_checked = True
            if first.casefold() in HEADER_NAMES:
                continue
        if not first:
            raise InputError(path, f"line {number}", "the gene column is empty", "write a symbol or Ensembl id")
        key = _comparable(first)
        if key in first_line:
            repeats.append(f"{first} on lines {first_line[key]} and {number}")
        else:
            first_line[key] = number
            entries.append(first)
            numbers.append(number)
    if repeats:
        raise InputError(path, "; ".join(repeats), f"{len(repeats)} gene(s) listed twice", "list each gene once")
    if not entries:
        raise InputError(path, None, "the gene set lists no genes",
                         "add one gene per line (optionally under a header line `gene`)")
    return GeneSetEntries(entries, numbers, path)


def resolve_gene_set(
    entries: list[str], annotation: Annotation, source: str | os.PathLike | None = None
) -> pd.DataFrame:
    """One row per entry, in manifest order (gene_order 0, 1, …): the matching gene and its chosen transcript.

    Symbols match gene_name exactly; Ensembl ids match version-insensitively. Entries not in the annotation
    and symbols naming several genes are reported together in one InputError, by line number when `entries`
    come from `read_gene_set` (by entry number otherwise). The transcript is chosen by `choose_transcripts`.
    """
    queries = pd.DataFrame({"gene_order": range(len(entries)), "query": list(entries)})
    is_id = queries["query"].str.match(ENSEMBL_GENE_ID.pattern)
    queries["key"] = strip_id_version(queries["query"]).where(is_id, queries["query"])
    queries["by"] = is_id.map({True: "gene_id_base", False: "gene_name"})
    genes = annotation.genes
    matches = pd.concat(
        [queries[queries.by == by].merge(genes, left_on="key", right_on=by) for by in ("gene_id_base", "gene_name")]
    ).sort_values(["gene_order", "gene_id"])
    matches, par_y = _without_par_y_copies(matches)
    _check_resolved(queries, matches, annotation, source, entries)

    resolved = matches.merge(choose_transcripts(annotation.transcripts, matches.gene_id), on="gene_id", how="left")
    resolved["transcript_choice"] = resolved.transcript_choice.fillna("no_transcript")
    resolved = resolved[RESOLVED_COLUMNS].sort_values("gene_order").reset_index(drop=True)
    resolved.attrs["par_y_copies_left_out"] = par_y
    return resolved


def _without_par_y_copies(matches: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """GENCODE lists each pseudoautosomal gene twice, the chrY copy's id suffixed _PAR_Y: a symbol naming both
    resolves to the chrX copy (GENCODE's own convention). Returns the matches without those copies, and the symbols
    so resolved."""
    par_y = matches["gene_id_base"].str.endswith("_PAR_Y") & (matches["by"] == "gene_name")
    twins = set(zip(matches["gene_order"], matches["gene_id_base"]))
    dropped = par_y & pd.Series([(order, base.removesuffix("_PAR_Y")) in twins for order, base in
                                 zip(matches["gene_order"], matches["gene_id_base"])], index=matches.index)
    return matches[~dropped], sorted(set(matches.loc[dropped, "query"]))


def choose_transcripts(transcripts: pd.DataFrame, gene_ids: pd.Series) -> pd.DataFrame:
    """gene_id → transcript_id, transcript_choice for the given genes.

    The rule, first that applies: tagged Ensembl_canonical, tagged MANE_Select, the longest CDS, the longest
    spliced transcript; remaining ties go to the smallest transcript_id.
    """
    candidates = transcripts[transcripts.gene_id.isin(gene_ids)].sort_values(
        ["gene_id", "is_ensembl_canonical", "is_mane_select", "cds_length", "exon_length", "transcript_id"],
        ascending=[True, False, False, False, False, True],
    )
    chosen = candidates.drop_duplicates("gene_id").copy()
    chosen["transcript_choice"] = "longest_transcript"
    chosen.loc[chosen.cds_length > 0, "transcript_choice"] = "longest_cds"
    chosen.loc[chosen.is_mane_select, "transcript_choice"] = "mane_select"
    chosen.loc[chosen.is_ensembl_canonical, "transcript_choice"] = "ensembl_canonical"
    return chosen[["gene_id", "transcript_id", "transcript_choice"]].reset_index(drop=True)


def _comparable(entry: str) -> str:
    return ID_VERSION.sub("", entry) if ENSEMBL_GENE_ID.match(entry) else entry


def _position(entries: list[str], index: int) -> str:
    return entries.position(index) if isinstance(entries, GeneSetEntries) else f"entry {index + 1}"


def _check_resolved(
    queries: pd.DataFrame, matches: pd.DataFrame, annotation: Annotation, source: str | os.PathLike | None,
    entries: list[str],
) -> None:
    per_entry = matches.groupby("gene_order").size().reindex(queries.gene_order, fill_value=0)
    missing = queries[per_entry.to_numpy() == 0]
    ambiguous = matches[matches.gene_order.isin(per_entry.index[per_entry > 1])]
    repeated = matches[matches.gene_id.duplicated(keep=False) & ~matches.gene_order.isin(ambiguous.gene_order)]
    problems = []
    if len(missing):
        names = annotation.genes.gene_name
        by_upper = pd.Series(names.to_numpy(), index=names.str.upper())
        hints = missing["query"].str.upper().map(by_upper[~by_upper.index.duplicated()])
        shown = [
            f"{row.query} ({_position(entries, row.gene_order)}"
            f"{f'; did you mean {hint}?' if isinstance(hint, str) else ''})"
            for row, hint in zip(missing.head(_SHOWN).itertuples(), hints.head(_SHOWN))
        ]
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        problems.append(f"{len(missing)} not in {annotation.version}: {', '.join(shown)}{more}")
        if isinstance(entries, GeneSetEntries) and missing.gene_order.iloc[0] == 0:
            problems.append(f"if line {entries.lines[0]} of {entries.path.name} is a header, name its first column "
                            "`gene`")
    for query, candidates in ambiguous.groupby("query", sort=False):
        listed = ", ".join(
            f"{c.gene_id} ({c.gene_type}, {c.chrom}:{c.start + 1}-{c.end})" for c in candidates.itertuples()
        )
        problems.append(f"{query} names {len(candidates)} genes: {listed}; write the Ensembl id of the one you mean")
    for gene_id, same in repeated.groupby("gene_id", sort=False):
        listed = " and ".join(f"{e.query} ({_position(entries, e.gene_order)})" for e in same.itertuples())
        problems.append(f"{listed} are the same gene {gene_id}; list it once")
    if problems:
        raise InputError(
            source,
            "; ".join(problems),
            "gene-set entries do not each resolve to exactly one annotation gene",
            "correct or remove the entries named; use Ensembl gene ids (version optional) where a symbol is "
            "ambiguous or has changed",
        )
