"""The brain feature table: one row per subject, numeric columns (imaging-derived phenotypes or a brain
foundation model's embedding); read, map the id column, validate, and hand out rows in a given subject order.

Errors say where a row is as an editor shows the file ("line 3 of brain.tsv"), as in the covariates table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kb_assets.errors import InputError
from kb_assets.stats.subject_tables import SHOWN, left_out_frame, place, read_subject_table, sample

_ID_KEY = "brain.columns.subject_id"
_FEATURES_KEY = "brain.columns.features"
ONLY_IN_BRAIN = "in the brain table without covariates"
NO_BRAIN_ROW = "in the covariates table without brain data"


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
            more = f" and {len(absent) - SHOWN} more" if len(absent) > SHOWN else ""
            raise InputError(
                self.source,
                "subject " + ", ".join(absent[:SHOWN]) + more,
                f"not in the brain table ({len(absent)} of {len(wanted)} subjects)",
                "analyse only subjects with brain data (those in both tables), or add their rows",
            )
        return self.frame[self.features].to_numpy(dtype=np.float64)[rows]


def left_out_of_evaluation(table: BrainTable, cohort: Iterable[str]) -> pd.DataFrame:
    """Every subject of the brain table or of the `cohort` (the covariates subjects) left out of the evaluation,
    once, and why (subject_id, reason): those the table dropped for a missing value, those only in the brain
    table, then cohort subjects without a brain row (in cohort order)."""
    cohort = list(cohort)
    in_cohort, in_table = set(cohort), set(table.subject_ids)
    dropped = {s for ids in table.dropped.values() for s in ids}
    return left_out_frame({**table.dropped,
                           ONLY_IN_BRAIN: [s for s in table.subject_ids if s not in in_cohort],
                           NO_BRAIN_ROW: [s for s in cohort if s not in in_table and s not in dropped]})


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
    raw = read_subject_table(path, "brain table", "inputs.brain")
    if subject_id not in raw.columns:
        raise InputError(path, f"column '{subject_id}'", f"not found; the file has columns {sample(list(raw), 12)}",
                         f"set {_ID_KEY} to the file's subject id column")
    names = [c for c in raw.columns if c != subject_id] if features is None else list(features)
    absent = [c for c in names if c not in raw.columns or c == subject_id]
    if absent:
        raise InputError(path, "column(s) " + ", ".join(f"'{c}'" for c in absent),
                         f"not found among the feature columns {sample([c for c in raw if c != subject_id], 12)}",
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
    where = raw.index
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
            f"{place(path, where[[first]], where.name)} (subject {ids.iloc[first]}), "
            f"column(s) {', '.join(columns[:SHOWN])}",
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


def _subject_ids(path: Path, values: pd.Series, column: str) -> pd.Series:
    blank = np.flatnonzero(values.isna().to_numpy())
    if len(blank):
        raise InputError(path, f"{place(path, values.index[blank[:1]], values.index.name)}, column '{column}'",
                         f"subject id is missing ({len(blank)} row(s) without an id)", "give every row a subject id")
    repeated = values[values.astype(str).duplicated(keep=False)].astype(str)
    if len(repeated):
        rows = repeated.groupby(repeated, sort=False).groups
        listed = [f"{subject} on {place(path, index, values.index.name)}" for subject, index in rows.items()]
        more = f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else ""
        raise InputError(path, "subject " + "; subject ".join(listed[:SHOWN]) + more,
                         "subject id appears more than once", "keep exactly one row per subject")
    return values.astype(str).reset_index(drop=True)


def _numeric(path: Path, values: pd.Series, column: str, ids: pd.Series) -> pd.Series:
    where = values.index
    values = values.reset_index(drop=True)
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    bad = np.flatnonzero((values.notna() & ~np.isfinite(numbers)).to_numpy())
    if len(bad):
        first, rest = bad[0], bad[1:]
        others = [f"{place(path, where[[r]], where.name, with_file=False)} '{values.iloc[r]}'"
                  for r in rest[: SHOWN - 1]]
        more = f" (also {', '.join(others)}{' and more' if len(rest) > len(others) else ''})" if others else ""
        kind = "finite" if pd.notna(numbers.iloc[first]) else "a number"
        raise InputError(
            path,
            f"{place(path, where[[first]], where.name)} (subject {ids.iloc[first]}), column '{column}'",
            f"'{values.iloc[first]}' is not {kind}{more}",
            "write brain features as numbers; leave unknown values empty (brain.missing decides what happens "
            "to them)",
        )
    return numbers
