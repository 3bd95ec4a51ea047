"""Reading a per-subject input table (the covariates, the brain features): CSV, TSV, tab-separated .txt (each
optionally gzipped) or parquet, every text cell a stripped string or missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kb_assets.errors import InputError

TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
SHOWN = 5  # how many offending records an error lists before "and N more"


def read_subject_table(path: Path, kind: str, recipe_key: str) -> pd.DataFrame:
    """The file's rows, text columns as stripped strings with empty cells missing; `kind` names the table in errors
    ("covariates file") and `recipe_key` the recipe input that points at it ("inputs.covariates")."""
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
    # Surrounding spaces are not part of a value, and an empty cell is a missing value.
    for name in frame.columns:
        if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            stripped = frame[name].str.strip()
            frame[name] = stripped.mask(stripped == "")
    return frame


def sample(values: list, shown: int = SHOWN) -> str:
    """The first `shown` values, comma-separated, and how many there are in all when that is more."""
    head = ", ".join(str(v) for v in values[:shown])
    return head + (f", … ({len(values)} in all)" if len(values) > shown else "")
