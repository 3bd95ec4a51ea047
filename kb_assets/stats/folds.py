"""Cross-validation folds, assigned once per subject so every downstream analysis reuses the same split."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from kb_assets.errors import InputError


def assign_folds(
    frame: pd.DataFrame,
    k: int = 5,
    seed: int = 42,
    group: str | None = "site",
    stratify: str | None = "label",
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """One row per subject: ``subject_id``, ``fold`` (0..k-1), ``group`` and ``stratum`` (None when unused).

    The scheme follows the columns the frame has: StratifiedGroupKFold (grouped by `group`, stratified by
    `stratify`), GroupKFold (size-balanced, so `seed` is not used), StratifiedKFold, or KFold; all shuffled with
    `seed` where the splitter shuffles. Subjects are sorted by id first, so the assignment depends neither on the
    row order of the covariates file nor on the names of the sites and labels (renaming one keeps every fold).
    ``attrs`` records ``scheme``, ``k``, ``seed``, ``group`` and ``stratify``. `source` (the covariates file) is
    named in errors.
    """
    ordered = frame.sort_values("subject_id", kind="stable").reset_index(drop=True)
    n = len(ordered)
    group = group if group is not None and group in ordered else None
    stratify = stratify if stratify is not None and stratify in ordered else None
    groups = ordered[group].astype(str).to_numpy() if group else None
    labels = ordered[stratify].astype(str).to_numpy() if stratify else None
    # The splitters order groups and classes by their names; numbering them by first appearance among the
    # id-sorted subjects instead makes the split depend only on who shares a site (or a label), not on names.
    group_codes = pd.factorize(groups)[0] if groups is not None else None
    label_codes = pd.factorize(labels)[0] if labels is not None else None

    if n < k:
        raise InputError(source, None, f"{n} subject(s) cannot fill k={k} folds", f"lower folds.k to at most {n}")
    if groups is not None:
        distinct = np.unique(groups)
        if len(distinct) < k:
            raise InputError(
                source,
                f"column {group}",
                f"{len(distinct)} distinct group(s) ({', '.join(distinct[:10])}) cannot fill k={k} group-disjoint "
                "folds",
                f"lower folds.k to at most {len(distinct)}, or set covariates.columns.site: null to split "
                "without grouping",
            )
    if labels is not None and len(np.unique(labels)) > n / k:
        raise InputError(
            source,
            f"column {stratify}",
            f"{len(np.unique(labels))} distinct values among {n} subjects: stratification needs classes",
            "map covariates.columns.label to a class column (e.g. case/control), or set it to null",
        )

    if groups is not None and labels is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    elif groups is not None:
        splitter = GroupKFold(n_splits=k)
    elif labels is not None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)

    fold = np.empty(n, dtype=np.int64)
    for number, (_, held_out) in enumerate(splitter.split(np.zeros(n), label_codes, group_codes)):
        fold[held_out] = number
    result = pd.DataFrame(
        {
            "subject_id": ordered["subject_id"].astype(str).to_numpy(),
            "fold": fold,
            "group": groups if groups is not None else None,
            "stratum": labels if labels is not None else None,
        }
    )
    result.attrs.update(scheme=type(splitter).__name__, k=k, seed=seed, group=group, stratify=stratify)
    return result
