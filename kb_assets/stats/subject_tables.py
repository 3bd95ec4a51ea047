"""Reading a per-subject input table (the covariates, the brain features): CSV, TSV, tab-separated .txt (each
optionally gzipped) or parquet, every text cell a stripped string or missing, each row labelled with where it is
in the file (its line, as an editor numbers them, or its parquet row) for errors."""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from kb_assets.errors import InputError

TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
SHOWN = 5  # how many offending records an error lists before "and N more"
# The subjects an input table's stage left out, and why: one row per subject.
LEFT_OUT_SCHEMA = pa.schema([("subject_id", pa.string()), ("reason", pa.string())])


def read_subject_table(path: Path, kind: str, recipe_key: str) -> pd.DataFrame:
    """The file's rows, text columns as stripped strings with empty cells missing; `kind` names the table in errors
    ("covariates file") and `recipe_key` the recipe input that points at it ("inputs.covariates"). The index is
    where each row is (`place` words it): its line in a text file (index name "line"), its row from 1 in a parquet
    file ("row"), or, when the lines cannot be matched to the rows (a quoted value spanning lines), its data row
    from 1 below the header ("data row")."""
    if not path.is_file():
        raise InputError(path, None, f"{kind} not found", f"point {recipe_key} at an existing file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    file_type = suffixes[-1] if suffixes else ""
    if file_type != ".parquet" and file_type not in TEXT_SEPARATORS:
        raise InputError(path, None, f"unknown {kind} type '{file_type or path.name}'",
                         "save it as .csv, .tsv, .txt (tab-separated) or .parquet")
    try:
        if file_type == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=TEXT_SEPARATORS[file_type], dtype=str)
    except (ValueError, OSError) as err:  # pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors
        raise InputError(path, None, f"cannot read the file as {file_type} ({err})",
                         "check that the extension matches the contents") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise InputError(path, None, "the file has a header but no subject rows", "add one row per subject")
    lines = None if file_type == ".parquet" else _data_lines(path, TEXT_SEPARATORS[file_type], len(frame))
    if lines is not None:
        frame.index = pd.Index(lines, name="line")
    else:
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="row" if file_type == ".parquet" else "data row")
    # Surrounding spaces are not part of a value, and an empty cell is a missing value.
    for name in frame.columns:
        if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            stripped = frame[name].str.strip()
            frame[name] = stripped.mask(stripped == "")
    return frame


def left_out_frame(reasons: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """(subject_id, reason) rows from reason → subject ids, in that order (LEFT_OUT_SCHEMA's columns)."""
    return pd.DataFrame({"subject_id": [s for ids in reasons.values() for s in ids],
                         "reason": [reason for reason, ids in reasons.items() for _ in ids]})


def place(path: Path, labels: Sequence[int] | pd.Index, unit: str, with_file: bool = True) -> str:
    """Where rows of a `read_subject_table` frame are: "line 3 of covariates.tsv", "lines 3 and 42 of …"; `labels`
    are their index labels and `unit` the index name."""
    numbers = [str(n) for n in labels]
    listed = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
    return f"{unit}{'s' if len(numbers) > 1 else ''} {listed}" + (f" of {path.name}" if with_file else "")


def _data_lines(path: Path, separator: str, n_rows: int) -> list[int] | None:
    """The line numbers of the data rows pandas read from a text table (the header's line and blank lines, which
    pandas skips, left out), or None when they do not match the `n_rows` rows read."""
    blank = " \t".replace(separator, "")  # pandas skips lines of nothing but whitespace other than the separator
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        lines = [number for number, line in enumerate(handle, 1) if line.rstrip("\n").strip(blank)]
    return lines[1:] if len(lines) == n_rows + 1 else None


def sample(values: list, shown: int = SHOWN) -> str:
    """The first `shown` values, comma-separated, and how many there are in all when that is more."""
    head = ", ".join(str(v) for v in values[:shown])
    return head + (f", … ({len(values)} in all)" if len(values) > shown else "")
