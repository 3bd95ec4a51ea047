"""The brain feature table: one row per subject, numeric columns (imaging-derived phenotypes or a brain
foundation model's embedding); read, map the id column, validate, and hand out rows in a given subject order.

Rows are numbered in errors as data rows counted from 1 below the header, as in the covariates table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kb_assets.errors import InputError

_TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_SHOWN = 5  # how many offending records an error lists before "and N more"
_ID_KEY = "brain.columns.subject_id"
_FEATURES_KEY = "brain.columns.features"


@dataclass(frozen=True)
class BrainTable:
    """A validated brain feature table: ``subject_id`` (str) and float64 feature columns, one row per subject."""

    frame: pd.DataFrame
    source: Path
    features: list[str]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason → subject ids left out

    @property
    def subject_ids(self) -> list[str]:
        return self.frame["subject_id"].tolist()

    def matrix(self, subject_ids: Sequence[str]) -> np.ndarray:
        """The features (subjects × features, float64) of the listed subjects, in that order.

        Every subject must be in the table: intersect the analysis cohort with `subject_ids` first.
        """
        index = pd.Index(self.frame["subject_id"])
        wanted = np.asarray(subject_ids, dtype=str)
        rows = index.get_indexer(wanted)
        absent = wanted[rows < 0]
        if len(absent):
            more = f" and {len(absent) - _SHOWN} more" if len(absent) > _SHOWN else ""
            raise InputError(
                self.source,
                "subject " + ", ".join(absent[:_SHOWN]) + more,
                f"not in the brain table ({len(absent)} of {len(wanted)} subjects)",
                "analyse only subjects with brain data (those in both tables), or add their rows",
            )
        return self.frame[self.features].to_numpy(dtype=np.float64)[rows]


def load_brain_table(
    path: str | os.PathLike,
    subject_id: str = "subject_id",
    features: Sequence[str] | None = None,
    missing: Literal["fail", "drop"] = "fail",
) -> BrainTable:
    """Read a .csv/.tsv/.txt (tab)/.parquet brain table (optionally .gz for text) and validate it.

    `subject_id` names the file's id column; `features` the feature columns, in order (default: every other
    column). Stops with an InputError for a missing column, a missing or duplicated subject id, a value that is
    not a finite number, an all-missing or constant feature, and (with ``missing="fail"``) any missing value;
    with ``missing="drop"`` subjects with a missing value are left out and listed in ``dropped``.
    """
    path = Path(path)
    raw = _read(path)
    if subject_id not in raw.columns:
        raise InputError(path, f"column '{subject_id}'", f"not found; the file has columns {_sample(list(raw), 12)}",
                         f"set {_ID_KEY} to the file's subject id column")
    names = [c for c in raw.columns if c != subject_id] if features is None else list(features)
    absent = [c for c in names if c not in raw.columns or c == subject_id]
    if absent:
        raise InputError(path, "column(s) " + ", ".join(f"'{c}'" for c in absent),
                         f"not found among the feature columns {_sample([c for c in raw if c != subject_id], 12)}",
                         f"list the file's feature columns in {_FEATURES_KEY}")
    if not names:
        raise InputError(path, None, "the table has no feature column besides the subject id",
                         "add the brain features as columns")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise InputError(path, "column(s) " + ", ".join(repeated), "listed more than once",
                         f"list each feature once in {_FEATURES_KEY}")

    ids = _subject_ids(path, raw[subject_id], subject_id)
    values = pd.DataFrame({name: _numeric(path, raw[name], name, ids) for name in names})
    for name in names:
        present = values[name].dropna()
        if present.empty:
            raise InputError(path, f"column '{name}'", f"every value is missing ({len(values)} rows)",
                             f"fill in the column, or leave it out of {_FEATURES_KEY}")
        if present.nunique() == 1:
            raise InputError(path, f"column '{name}'", f"every value is {present.iloc[0]:g}: a constant carries "
                             "no information and cannot be standardized", f"leave it out of {_FEATURES_KEY}")

    gaps = values.isna().to_numpy()
    rows = np.flatnonzero(gaps.any(axis=1))
    dropped: dict[str, list[str]] = {}
    if len(rows) and missing == "fail":
        first = rows[0]
        columns = [n for n, gap in zip(names, gaps[first]) if gap]
        raise InputError(
            path,
            f"row {first + 1} (subject {ids.iloc[first]}), column(s) {', '.join(columns[:_SHOWN])}",
            f"missing value ({len(rows)} row(s) have missing values)",
            "fill them in, or set brain.missing: drop to leave those subjects out (they are counted)",
        )
    for row in rows:
        reason = "missing " + ", ".join(n for n, gap in zip(names, gaps[row]) if gap)
        dropped.setdefault(reason, []).append(ids.iloc[row])
    keep = ~gaps.any(axis=1)
    if not keep.any():
        raise InputError(path, None, "no subject is left after dropping those with missing values",
                         "fill in the missing values")
    frame = pd.concat([ids.rename("subject_id"), values], axis=1)[keep].reset_index(drop=True)
    return BrainTable(frame=frame, source=path, features=names, dropped=dropped)


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, None, "brain table not found", "point inputs.brain at an existing file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind != ".parquet" and kind not in _TEXT_SEPARATORS:
        raise InputError(path, None, f"unknown brain table file type '{kind or path.name}'",
                         "save it as .csv, .tsv, .txt (tab-separated) or .parquet")
    try:
        if kind == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=_TEXT_SEPARATORS[kind], dtype=str)
    except (ValueError, OSError) as err:  # pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors
        raise InputError(path, None, f"cannot read the file as {kind} ({err})",
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


def _subject_ids(path: Path, values: pd.Series, column: str) -> pd.Series:
    blank = np.flatnonzero(values.isna().to_numpy())
    if len(blank):
        raise InputError(path, f"row {blank[0] + 1}, column '{column}'",
                         f"subject id is missing ({len(blank)} row(s) without an id)", "give every row a subject id")
    ids = values.astype(str).reset_index(drop=True)
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        rows = repeated.groupby(repeated, sort=False).groups
        listed = [f"{subject} (rows {', '.join(str(r + 1) for r in index)})" for subject, index in rows.items()]
        more = f" and {len(listed) - _SHOWN} more" if len(listed) > _SHOWN else ""
        raise InputError(path, "subject " + "; subject ".join(listed[:_SHOWN]) + more,
                         "subject id appears more than once", "keep exactly one row per subject")
    return ids


def _numeric(path: Path, values: pd.Series, column: str, ids: pd.Series) -> pd.Series:
    values = values.reset_index(drop=True)
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    bad = np.flatnonzero((values.notna() & ~np.isfinite(numbers)).to_numpy())
    if len(bad):
        first, rest = bad[0], bad[1:]
        others = [f"row {r + 1} '{values.iloc[r]}'" for r in rest[: _SHOWN - 1]]
        more = f" (also {', '.join(others)}{' and more' if len(rest) > len(others) else ''})" if others else ""
        kind = "finite" if pd.notna(numbers.iloc[first]) else "a number"
        raise InputError(
            path,
            f"row {first + 1} (subject {ids.iloc[first]}), column '{column}'",
            f"'{values.iloc[first]}' is not {kind}{more}",
            "write brain features as numbers; leave unknown values empty (brain.missing decides what happens "
            "to them)",
        )
    return numbers


def _sample(values: list, shown: int = _SHOWN) -> str:
    head = ", ".join(str(v) for v in values[:shown])
    return head + (f", … ({len(values)} in all)" if len(values) > shown else "")
