"""The covariates table: read, map the cohort's column names to canonical ones, validate; code OLS designs.

Canonical columns: ``subject_id`` (str), ``age`` (float), ``sex`` (category), ``pc1``..``pcN`` (float),
``batch`` (category), and ``site`` / ``label`` (category) when the file has them. Errors say where a row is as
an editor shows the file ("line 3 of covariates.tsv", the header being line 1; a parquet file's rows count from 1),
as the gene set's errors do.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from kb_assets.errors import InputError
from kb_assets.settings import CovariateColumns
from kb_assets.stats.subject_tables import SHOWN, left_out_frame, place, read_subject_table, sample

CATEGORICAL = ("sex", "batch", "site", "label")
_OPTIONAL = ("site", "label")
ONLY_IN_VCF = "in the VCF without covariates"
ONLY_IN_TABLE = "in the covariates table without genotypes"


@dataclass(frozen=True)
class _Column:
    canonical: str  # name in CovariateTable.frame
    source: str  # name in the cohort's file
    recipe_key: str  # where the recipe maps it


@dataclass(frozen=True)
class CovariateTable:
    """A validated covariates table: one row per subject, canonical column names and types."""

    frame: pd.DataFrame
    source: Path
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason → subject ids left out

    @property
    def covariate_names(self) -> list[str]:
        return covariate_names(self.frame.columns)


def pc_columns(columns: Iterable[str]) -> list[str]:
    """The ancestry PC columns (pc1, pc2, …) among canonical column names, in their order."""
    return [c for c in columns if c.startswith("pc") and c[2:].isdigit()]


def covariate_names(columns: Iterable[str]) -> list[str]:
    """The covariates residualized out of canonical columns: age, sex, the ancestry PCs and batch."""
    return ["age", "sex", *pc_columns(columns), "batch"]


def load_covariates(
    path: str | os.PathLike, columns: CovariateColumns, missing: Literal["fail", "drop"] = "fail"
) -> CovariateTable:
    """Read a .csv/.tsv/.txt (tab)/.parquet covariates file (optionally .gz for text) and validate it.

    Stops with an InputError for a missing required column, an all-missing column, duplicated subject ids,
    non-numeric ages or PCs, and (with ``missing="fail"``) any missing value; with ``missing="drop"`` subjects
    with a missing value are left out and listed in ``dropped``.
    """
    path = Path(path)
    raw = read_subject_table(path, "covariates file", "inputs.covariates")
    mapped = _mapped_columns(path, raw, columns)
    frame = raw[[c.source for c in mapped]].copy()
    frame.columns = [c.canonical for c in mapped]
    by_name = {c.canonical: c for c in mapped}

    _check_not_all_missing(path, frame, by_name)
    _check_subject_ids(path, frame, by_name["subject_id"])
    for name in ["age", *pc_columns(frame.columns)]:
        frame[name] = _numeric(path, frame, by_name[name])
    for name in CATEGORICAL:
        if name in frame:
            frame[name] = _categorical(frame[name])

    dropped = _apply_missing_policy(path, frame, by_name, missing)
    frame = frame[~frame["subject_id"].isin({s for ids in dropped.values() for s in ids})]
    if frame.empty:
        raise InputError(path, None, "no subject is left after dropping those with missing values",
                         "fill in the missing values")
    for name in CATEGORICAL:
        if name in frame:
            frame[name] = frame[name].cat.remove_unused_categories()
    return CovariateTable(frame=frame.reset_index(drop=True), source=path, dropped=dropped)


def intersect_subjects(table: CovariateTable, vcf_subjects: list[str]) -> tuple[CovariateTable, dict]:
    """Keep the subjects present in both the VCF and the table (in table order); report the rest.

    The report holds ``only_in_vcf`` / ``only_in_table`` (sorted ids), their counts and ``n_analysis``. A subject
    the table dropped for a missing value is in neither: it is left out once, as dropped.
    """
    in_vcf = set(vcf_subjects)
    in_table = set(table.frame["subject_id"])
    dropped = {s for ids in table.dropped.values() for s in ids}
    keep = table.frame["subject_id"].isin(in_vcf)
    if not keep.any():
        raise InputError(
            table.source,
            None,
            f"no subject is in both the VCF and the covariates table (VCF ids look like "
            f"{sample(sorted(in_vcf))}; table ids look like {sample(sorted(in_table))})",
            "make the subject ids in covariates.columns.subject_id match the VCF sample names",
        )
    only_in_vcf = sorted(in_vcf - in_table - dropped)
    only_in_table = sorted(in_table - in_vcf)
    report = {
        "n_analysis": int(keep.sum()),
        "n_only_in_vcf": len(only_in_vcf),
        "n_only_in_table": len(only_in_table),
        "only_in_vcf": only_in_vcf,
        "only_in_table": only_in_table,
    }
    frame = table.frame[keep].reset_index(drop=True)
    for name in CATEGORICAL:
        if name in frame:
            frame[name] = frame[name].cat.remove_unused_categories()
    return CovariateTable(frame=frame, source=table.source, dropped=table.dropped), report


def left_out_subjects(dropped: Mapping[str, list[str]], intersection: Mapping[str, object]) -> pd.DataFrame:
    """Every input subject left out of the analysis set, once, and why (subject_id, reason): those `dropped` for a
    missing value, then those an `intersect_subjects` report (empty without a VCF) finds in one source only."""
    return left_out_frame({**dropped, ONLY_IN_VCF: intersection.get("only_in_vcf", []),
                           ONLY_IN_TABLE: intersection.get("only_in_table", [])})


class CovariateCoder(TransformerMixin, BaseEstimator):
    """Covariates → the OLS design: an intercept, numeric covariates as they are, categoricals effect-coded.

    Effect (sum-to-zero) coding over the levels seen in the frame given to `fit`: one column per fitted level
    but the last, 1 for that level, −1 for the last, 0 otherwise. The fitted values, and hence every residual,
    do not depend on the level names or their order; and a subject whose level was not seen in fit (a batch
    held out with its site) gets a zero row for that factor, i.e. is residualized to the average of the fitted
    levels, never to one arbitrary level. Written here because neither scikit-learn's OneHotEncoder (indicator or
    treatment coding) nor a formula's Sum contrast (over a fixed level set) codes over the levels a fold has seen.

    ``levels`` (per categorical) is the whole table's level set; by default a categorical column's categories
    (the whole covariates table's, kept by ``frame.iloc[rows]``), else the distinct values `fit` sees. A value
    outside it is an error in `transform`. Fitted: ``levels_``, ``fitted_levels_`` (those seen in fit, in
    ``levels_`` order), ``columns_`` (= ``get_feature_names_out()``: ``intercept``, the numeric names, then
    ``name[level]`` per effect column).
    """

    def __init__(self, categorical: Sequence[str] = (), numeric: Sequence[str] = (),
                 levels: Mapping[str, Sequence] | None = None):
        self.categorical = categorical
        self.numeric = numeric
        self.levels = levels

    def fit(self, frame: pd.DataFrame, y: object = None) -> CovariateCoder:
        self._check_columns(frame)
        self.levels_ = {}
        self.fitted_levels_ = {}
        for name in self.categorical:
            values = frame[name]
            if self.levels is not None and name in self.levels:
                levels = [str(level) for level in self.levels[name]]
            elif isinstance(values.dtype, pd.CategoricalDtype):
                levels = [str(level) for level in values.cat.categories]
            else:
                levels = sorted(values.dropna().astype(str).unique())
            self.levels_[name] = levels
            text = self._level_text(name, values)
            seen = set(text)
            self.fitted_levels_[name] = [level for level in levels if level in seen]
        self.columns_ = self._columns()
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The float64 design [len(frame), len(columns_)]."""
        self._check_columns(frame)
        blocks = [np.ones((len(frame), 1))]
        for name in self.numeric:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"covariate {name} has a missing or non-finite value")
            blocks.append(values[:, None])
        for name in self.categorical:
            text = self._level_text(name, frame[name])
            fitted = self.fitted_levels_[name]
            code = pd.Index(fitted).get_indexer(text)
            effect = np.zeros((len(frame), max(len(fitted) - 1, 0)))
            listed = code >= 0
            last = code == len(fitted) - 1
            effect[np.flatnonzero(listed & ~last), code[listed & ~last]] = 1.0
            effect[last] = -1.0
            blocks.append(effect)
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array(self.columns_, dtype=object)

    def unseen_level_counts(self, frame: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Per categorical, the levels of `frame` not seen in fit and how many of its subjects carry each."""
        counts = {}
        for name in self.categorical:
            text = pd.Series(self._level_text(name, frame[name]))
            unseen = text[~text.isin(self.fitted_levels_[name])]
            if len(unseen):
                counts[name] = {str(level): int(n) for level, n in unseen.value_counts().sort_index().items()}
        return counts

    def to_json(self) -> str:
        """The fitted coder as JSON (saved with the PCA of its fold; read back by `from_json`)."""
        return json.dumps({"categorical": list(self.categorical), "numeric": list(self.numeric),
                           "levels_": self.levels_, "fitted_levels_": self.fitted_levels_})

    @classmethod
    def from_json(cls, text: str) -> CovariateCoder:
        state = json.loads(text)
        coder = cls(state["categorical"], state["numeric"], levels=state["levels_"])
        coder.levels_ = state["levels_"]
        coder.fitted_levels_ = state["fitted_levels_"]
        coder.columns_ = coder._columns()
        return coder

    def _columns(self) -> list[str]:
        names = ["intercept", *self.numeric]
        for name in self.categorical:
            names.extend(f"{name}[{level}]" for level in self.fitted_levels_[name][:-1])
        return names

    def _level_text(self, name: str, values: pd.Series) -> np.ndarray:
        if values.isna().any():
            raise ValueError(f"covariate {name} has a missing value")
        text = values.astype(str).to_numpy()
        outside = sorted(set(text) - set(self.levels_[name]))
        if outside:
            raise ValueError(f"covariate {name} has level(s) {', '.join(outside[:5])} outside the coder's levels "
                             f"({', '.join(self.levels_[name][:5])}, …)")
        return text

    def _check_columns(self, frame: pd.DataFrame) -> None:
        absent = [name for name in (*self.numeric, *self.categorical) if name not in frame]
        if absent:
            raise ValueError(f"covariate column(s) {', '.join(absent)} not in the frame")


def covariate_coder(frame: pd.DataFrame) -> CovariateCoder:
    """The recipe's coder for a canonical covariates frame: age and the ancestry PCs numeric, sex and batch
    categorical (the covariates residualized out; site and label are not)."""
    return CovariateCoder(categorical=["sex", "batch"], numeric=["age", *pc_columns(frame.columns)])


def unfittable_folds(frame: pd.DataFrame, folds: pd.DataFrame, removes_design: bool) -> list[str]:
    """Why the cross-validated PCA cannot run on the subjects of `frame` (canonical covariates) with the fold
    assignment `folds` (subject_id, fold; it may list more subjects): one phrase per fold left without held-out
    subjects, or whose training subjects do not outnumber what the PCA removes from them — the covariate design's
    rank when `removes_design` (residualize_then_pca), else the mean (ResidualizedPCA.fit needs at least one
    more). Empty when every fold can be fitted."""
    fold_of = folds.set_index("subject_id")["fold"].reindex(frame["subject_id"]).to_numpy()
    phrases = []
    for fold in sorted(folds["fold"].unique()):
        train = frame[fold_of != fold]
        if len(train) == len(frame) or not len(train):
            phrases.append(f"fold {fold} keeps no {'held-out' if len(train) else 'training'} subject")
            continue
        removed = 1
        if removes_design:
            coder = covariate_coder(train).fit(train)
            removed = int(np.linalg.matrix_rank(coder.transform(train)))
        if len(train) <= removed:
            phrases.append(f"fold {fold} keeps {len(train)} training subject(s) for "
                           + (f"a covariate design of rank {removed}" if removes_design else "the mean"))
    return phrases


def _mapped_columns(path: Path, raw: pd.DataFrame, columns: CovariateColumns) -> list[_Column]:
    wanted = [
        _Column("subject_id", columns.subject_id, "covariates.columns.subject_id"),
        _Column("age", columns.age, "covariates.columns.age"),
        _Column("sex", columns.sex, "covariates.columns.sex"),
        *(_Column(f"pc{i}", name, "covariates.columns.pcs") for i, name in enumerate(columns.pcs, start=1)),
        _Column("batch", columns.batch, "covariates.columns.batch"),
    ]
    for name in _OPTIONAL:
        source = getattr(columns, name)
        # A site/label column named only by the default is used when present; one the recipe names must exist.
        if source is not None and (source in raw.columns or name in columns.model_fields_set):
            wanted.append(_Column(name, source, f"covariates.columns.{name}"))
    absent = [c for c in wanted if c.source not in raw.columns]
    if absent:
        have = list(raw.columns)
        hints = []
        for key in dict.fromkeys(c.recipe_key for c in absent):
            names = [c.source for c in absent if c.recipe_key == key]
            hints.append(_pcs_hint(have) if key == "covariates.columns.pcs" else _column_hint(key, names[0], have))
        raise InputError(
            path,
            "column(s) " + ", ".join(f"'{c.source}'" for c in absent),
            f"not found; the file has columns {sample(have, 12)}",
            "map them in the recipe: " + "; ".join(hints),
        )
    return wanted


def _column_hint(key: str, name: str, have: list[str]) -> str:
    lowered = [h.lower() for h in have]
    close = difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=0.6)
    return f"{key}: {have[lowered.index(close[0])]}" if close else f"{key}: <the file's column for it, not '{name}'>"


def _pcs_hint(have: list[str]) -> str:
    # Cohorts number their PCs (pc1, pcs_1, genetic_pc_1, PC1 …): offer the file's numbered PC-like columns.
    numbered = [(int(m.group(1)), h) for h in have if (m := re.fullmatch(r"(?i).*pc\D*(\d+)", h))]
    listed = [h for _, h in sorted(numbered)]
    if listed:
        return f"covariates.columns.pcs: [{', '.join(listed)}]"
    return "covariates.columns.pcs: <the file's ancestry PC columns, in order>"


def _check_not_all_missing(path: Path, frame: pd.DataFrame, by_name: dict[str, _Column]) -> None:
    for name in frame.columns:
        if frame[name].isna().all():
            column = by_name[name]
            optional = f", or set {column.recipe_key}: null" if name in _OPTIONAL else ""
            raise InputError(
                path,
                f"column '{column.source}'",
                f"every value is missing ({len(frame)} rows)",
                f"fill in the column, or map {column.recipe_key} to the column that holds it{optional}",
            )


def _check_subject_ids(path: Path, frame: pd.DataFrame, column: _Column) -> None:
    blank = np.flatnonzero(frame["subject_id"].isna().to_numpy())
    if len(blank):
        raise InputError(
            path,
            f"{place(path, frame.index[blank[:1]], frame.index.name)}, column '{column.source}'",
            f"subject id is missing ({len(blank)} row(s) without an id)",
            "give every row a subject id",
        )
    ids = frame["subject_id"].astype(str)
    frame["subject_id"] = ids
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        rows = repeated.groupby(repeated, sort=False).groups
        listed = [f"{subject} on {place(path, index, frame.index.name)}" for subject, index in rows.items()]
        more = f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else ""
        raise InputError(
            path,
            "subject " + "; subject ".join(listed[:SHOWN]) + more,
            "subject id appears more than once",
            "keep exactly one row per subject",
        )


def _categorical(values: pd.Series) -> pd.Categorical:
    # Levels are text (a parquet batch of 1, 2, 10 reads like the CSV "1", "2", "10") and sorted, so the design
    # columns do not depend on the file type or the row order.
    text = values.where(values.isna(), values.astype(str))
    return pd.Categorical(text, categories=sorted(text.dropna().unique()))


def _numeric(path: Path, frame: pd.DataFrame, column: _Column) -> pd.Series:
    values = frame[column.canonical]
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    bad = np.flatnonzero((values.notna() & ~np.isfinite(numbers)).to_numpy())
    if len(bad):
        first, rest = bad[0], bad[1:]
        unit = frame.index.name
        others = [f"{place(path, frame.index[[r]], unit, with_file=False)} '{values.iloc[r]}'"
                  for r in rest[: SHOWN - 1]]
        more = f" (also {', '.join(others)}{' and more' if len(rest) > len(others) else ''})" if others else ""
        raise InputError(
            path,
            f"{place(path, frame.index[[first]], unit)} (subject {frame['subject_id'].iloc[first]}), "
            f"column '{column.source}'",
            f"'{values.iloc[first]}' is not {'finite' if pd.notna(numbers.iloc[first]) else 'a number'}{more}",
            f"write {column.recipe_key} values as numbers; leave unknown values empty "
            "(covariates.missing decides what happens to them)",
        )
    return numbers


def _apply_missing_policy(
    path: Path, frame: pd.DataFrame, by_name: dict[str, _Column], missing: str
) -> dict[str, list[str]]:
    gaps = frame.drop(columns="subject_id").isna()
    rows = np.flatnonzero(gaps.any(axis=1).to_numpy())
    if not len(rows):
        return {}
    if missing == "fail":
        first = rows[0]
        names = [by_name[c].source for c in gaps.columns[gaps.iloc[first].to_numpy()]]
        raise InputError(
            path,
            f"{place(path, frame.index[[first]], frame.index.name)} (subject {frame['subject_id'].iloc[first]}), "
            f"column(s) {', '.join(names)}",
            f"missing value ({len(rows)} row(s) have missing values)",
            "fill them in, or set covariates.missing: drop to leave those subjects out (they are counted)",
        )
    dropped: dict[str, list[str]] = {}
    for row in rows:
        reason = "missing " + ", ".join(gaps.columns[gaps.iloc[row].to_numpy()])
        dropped.setdefault(reason, []).append(frame["subject_id"].iloc[row])
    return dropped
