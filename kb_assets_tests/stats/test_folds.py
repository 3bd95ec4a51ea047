import numpy as np
import pandas as pd
import pytest

from kb_assets.errors import InputError
from kb_assets.stats.folds import assign_folds
from kb_assets_tests.stats.conftest import cohort_frame


def test_same_seed_same_folds_whatever_the_row_order():
    frame = cohort_frame(400, n_sites=30)
    first = assign_folds(frame, k=5, seed=42)
    shuffled = assign_folds(frame.sample(frac=1.0, random_state=7), k=5, seed=42)
    pd.testing.assert_frame_equal(first, shuffled)
    other_seed = assign_folds(frame, k=5, seed=43)
    assert not np.array_equal(first["fold"], other_seed["fold"])


def test_every_subject_in_one_fold_and_no_site_in_two():
    frame = cohort_frame(600, n_sites=30)
    folds = assign_folds(frame, k=5, seed=42)
    assert folds.attrs["scheme"] == "StratifiedGroupKFold"
    assert sorted(folds["subject_id"]) == sorted(frame["subject_id"])
    assert set(folds["fold"]) == {0, 1, 2, 3, 4}
    assert folds.groupby("group")["fold"].nunique().max() == 1
    site_of = dict(zip(frame["subject_id"], frame["site"].astype(str)))
    assert (folds["group"] == folds["subject_id"].map(site_of)).all()


def test_label_proportions_are_kept_in_every_fold():
    frame = cohort_frame(600, n_sites=40)
    folds = assign_folds(frame, k=5, seed=42)
    overall = (folds["stratum"] == "case").mean()
    per_fold = folds.groupby("fold")["stratum"].apply(lambda s: (s == "case").mean())
    assert np.abs(per_fold - overall).max() < 0.04


def test_without_site_the_split_is_stratified_kfold_with_exact_class_balance():
    frame = cohort_frame(500).drop(columns="site")
    folds = assign_folds(frame, k=5, seed=42)
    assert folds.attrs["scheme"] == "StratifiedKFold"
    assert folds["group"].isna().all()
    cases = folds[folds["stratum"] == "case"].groupby("fold").size()
    assert cases.max() - cases.min() <= 1


def test_scheme_follows_the_available_columns():
    frame = cohort_frame(200)
    assert assign_folds(frame.drop(columns="label")).attrs["scheme"] == "GroupKFold"
    plain = assign_folds(frame.drop(columns=["site", "label"]), k=4, seed=1)
    assert plain.attrs == {"scheme": "KFold", "k": 4, "seed": 1, "group": None, "stratify": None}
    assert plain.groupby("fold").size().tolist() == [50, 50, 50, 50]
    assert assign_folds(frame, group=None, stratify=None).attrs["scheme"] == "KFold"


def test_fewer_sites_than_folds_is_an_error():
    frame = cohort_frame(100, n_sites=3)
    with pytest.raises(InputError) as caught:
        assign_folds(frame, k=5, source="cohort.csv")
    assert str(caught.value) == (
        "cohort.csv: column site: 3 distinct group(s) (site00, site01, site02) cannot fill k=5 group-disjoint folds. "
        "Fix: lower folds.k to at most 3, or set covariates.columns.site: null to split without grouping"
    )


def test_a_continuous_label_cannot_stratify():
    frame = cohort_frame(100).drop(columns="site")
    frame["label"] = np.arange(100).astype(str)
    with pytest.raises(InputError, match="100 distinct values among 100 subjects: stratification needs classes"):
        assign_folds(frame)


def test_renaming_sites_and_labels_keeps_every_fold():
    frame = cohort_frame(600, n_sites=30)
    first = assign_folds(frame, k=5, seed=42)
    renamed = frame.copy()
    # Reverse the sort order of the site names and swap the label names: the same grouping and classes.
    renamed["site"] = pd.Categorical([f"z{99 - int(s[4:])}" for s in frame["site"].astype(str)])
    renamed["label"] = frame["label"].astype(str).map({"case": "yes", "control": "a_no"})
    again = assign_folds(renamed, k=5, seed=42)
    np.testing.assert_array_equal(again["fold"], first["fold"])
    assert again.groupby("group")["fold"].nunique().max() == 1
