import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from kb_assets.errors import InputError
from kb_assets.settings import CovariateColumns
from kb_assets.stats.covariates import (
    ONLY_IN_TABLE,
    ONLY_IN_VCF,
    CovariateCoder,
    covariate_coder,
    intersect_subjects,
    left_out_subjects,
    load_covariates,
    unfittable_folds,
)
from kb_assets_tests.stats.conftest import cohort_frame, write_table

HEADER = ["subject_id", "age", "sex", "pc1", "pc2", "batch"]
ROWS = [
    ["S1", 50, "F", 0.01, -0.02, "b1"],
    ["S2", 61.5, "M", 0.03, 0.00, "b2"],
    ["S3", 47, "M", -0.01, 0.02, "b1"],
    ["S4", 70, "F", 0.00, 0.01, "b2"],
]
TWO_PCS = CovariateColumns(pcs=["pc1", "pc2"])


def test_cohort_column_names_map_to_canonical_ones(tmp_path: Path):
    path = write_table(
        tmp_path / "cohort.csv",
        ["IID", "Age", "Sex", "genetic_pc_1", "genetic_pc_2", "Batch", "Centre", "Dx"],
        [["007", 50, "F", 0.1, 0.2, 3, "A", "case"], ["012", 60, "M", 0.3, 0.4, 10, "B", "control"]],
    )
    columns = CovariateColumns(
        subject_id="IID", age="Age", sex="Sex", batch="Batch", site="Centre", label="Dx",
        pcs=["genetic_pc_1", "genetic_pc_2"],
    )
    frame = load_covariates(path, columns).frame
    assert list(frame.columns) == ["subject_id", "age", "sex", "pc1", "pc2", "batch", "site", "label"]
    assert frame["subject_id"].tolist() == ["007", "012"]  # ids stay text: leading zeros kept
    assert frame["age"].dtype == np.float64 and frame["pc2"].tolist() == [0.2, 0.4]
    assert list(frame["sex"].cat.categories) == ["F", "M"]
    assert list(frame["batch"].cat.categories) == ["10", "3"]  # text levels, sorted


@pytest.mark.parametrize("name, sep", [("c.tsv", "\t"), ("c.txt", "\t"), ("c.csv", ",")])
def test_text_formats_and_parquet_read_alike(tmp_path: Path, name: str, sep: str):
    text = load_covariates(write_table(tmp_path / name, HEADER, ROWS, sep=sep), TWO_PCS).frame
    raw = pd.DataFrame(ROWS, columns=HEADER)
    raw.to_parquet(tmp_path / "c.parquet")
    parquet = load_covariates(tmp_path / "c.parquet", TWO_PCS).frame
    pd.testing.assert_frame_equal(text, parquet)
    assert "site" not in text and "label" not in text  # default optional names, absent from the file


def test_duplicated_subject_names_the_id_rows_and_file(tmp_path: Path):
    path = write_table(tmp_path / "dup.csv", HEADER, [*ROWS, ["S2", 40, "F", 0, 0, "b1"]])
    with pytest.raises(InputError) as caught:
        load_covariates(path, TWO_PCS)
    assert str(caught.value) == (
        f"{path}: subject S2 on lines 3 and 6 of dup.csv: subject id appears more than once. Fix: keep exactly one "
        "row per subject"
    )


def test_text_in_age_names_the_row_subject_and_value(tmp_path: Path):
    rows = [list(r) for r in ROWS]
    rows[2][1] = "forty-seven"
    path = write_table(tmp_path / "age.csv", ["subject_id", "Age", *HEADER[2:]], rows)
    with pytest.raises(InputError) as caught:
        load_covariates(path, CovariateColumns(age="Age", pcs=["pc1", "pc2"]))
    assert str(caught.value) == (
        f"{path}: line 4 of age.csv (subject S3), column 'Age': 'forty-seven' is not a number. "
        "Fix: write covariates.columns.age values as numbers; leave unknown values empty "
        "(covariates.missing decides what happens to them)"
    )


def test_all_missing_column_is_named(tmp_path: Path):
    rows = [[*r[:5], None] for r in ROWS]
    path = write_table(tmp_path / "nobatch.csv", HEADER, rows)
    with pytest.raises(InputError) as caught:
        load_covariates(path, TWO_PCS)
    assert str(caught.value) == (
        f"{path}: column 'batch': every value is missing (4 rows). "
        "Fix: fill in the column, or map covariates.columns.batch to the column that holds it"
    )


def test_missing_required_column_names_the_recipe_key_and_the_likely_column(tmp_path: Path):
    path = write_table(tmp_path / "c.csv", ["subject_id", "Age", "sex", "pcs_1", "pcs_2", "batch"], ROWS)
    with pytest.raises(InputError) as caught:
        load_covariates(path, TWO_PCS)
    assert str(caught.value) == (
        f"{path}: column(s) 'age', 'pc1', 'pc2': not found; the file has columns subject_id, Age, sex, pcs_1, "
        "pcs_2, batch. Fix: map them in the recipe: covariates.columns.age: Age; "
        "covariates.columns.pcs: [pcs_1, pcs_2]"
    )


def test_a_site_column_the_recipe_names_must_exist(tmp_path: Path):
    path = write_table(tmp_path / "c.csv", HEADER, ROWS)
    with pytest.raises(InputError, match=re.escape("column(s) 'centre': not found")):
        load_covariates(path, CovariateColumns(pcs=["pc1", "pc2"], site="centre"))


def test_missing_values_fail_by_default_naming_the_first(tmp_path: Path):
    rows = [list(r) for r in ROWS]
    rows[1][3] = "NA"
    rows[3][1] = None
    path = write_table(tmp_path / "gaps.csv", HEADER, rows)
    with pytest.raises(InputError) as caught:
        load_covariates(path, TWO_PCS)
    assert str(caught.value) == (
        f"{path}: line 3 of gaps.csv (subject S2), column(s) pc1: missing value (2 row(s) have missing values). "
        "Fix: fill them in, or set covariates.missing: drop to leave those subjects out (they are counted)"
    )


def test_missing_values_dropped_and_counted_with_drop_policy(tmp_path: Path):
    rows = [list(r) for r in ROWS]
    rows[1][3] = "NA"
    rows[3][1] = ""
    rows[3][5] = " "
    path = write_table(tmp_path / "gaps.csv", HEADER, rows)
    table = load_covariates(path, TWO_PCS, missing="drop")
    assert table.frame["subject_id"].tolist() == ["S1", "S3"]
    assert table.dropped == {"missing pc1": ["S2"], "missing age, batch": ["S4"]}
    assert list(table.frame["batch"].cat.categories) == ["b1"]  # b2 left with the dropped subjects


def test_intersection_keeps_shared_subjects_and_reports_the_rest(tmp_path: Path):
    table = load_covariates(write_table(tmp_path / "c.csv", HEADER, ROWS), TWO_PCS)
    shared, report = intersect_subjects(table, ["S3", "S9", "S1", "S8"])
    assert shared.frame["subject_id"].tolist() == ["S1", "S3"]
    assert report == {
        "n_analysis": 2,
        "n_only_in_vcf": 2,
        "n_only_in_table": 2,
        "only_in_vcf": ["S8", "S9"],
        "only_in_table": ["S2", "S4"],
    }


def test_a_subject_dropped_for_a_missing_value_is_left_out_once_as_dropped(tmp_path: Path):
    rows = [list(r) for r in ROWS]
    rows[1][1] = ""  # S2, in the VCF, has no age
    table = load_covariates(write_table(tmp_path / "c.csv", HEADER, rows), TWO_PCS, missing="drop")
    shared, report = intersect_subjects(table, ["S1", "S2", "S3", "S9"])
    assert report["only_in_vcf"] == ["S9"] and report["only_in_table"] == ["S4"]
    left_out = left_out_subjects(shared.dropped, report)
    assert left_out.values.tolist() == [["S2", "missing age"], ["S9", ONLY_IN_VCF], ["S4", ONLY_IN_TABLE]]
    assert left_out_subjects(table.dropped, {}).values.tolist() == [["S2", "missing age"]]  # no VCF


def test_no_shared_subject_is_an_error(tmp_path: Path):
    table = load_covariates(write_table(tmp_path / "c.csv", HEADER, ROWS), TWO_PCS)
    with pytest.raises(InputError, match=r"no subject is in both the VCF and the covariates table \(VCF ids look "
                                         r"like sample_1; table ids look like S1, S2, S3, S4\)"):
        intersect_subjects(table, ["sample_1"])


def test_unknown_file_type(tmp_path: Path):
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InputError, match=r"unknown covariates file type '\.xlsx'"):
        load_covariates(path, TWO_PCS)


def test_coder_effect_codes_over_the_fitted_levels(tmp_path: Path):
    table = load_covariates(write_table(tmp_path / "c.csv", HEADER, ROWS[::-1]), TWO_PCS)
    coder = covariate_coder(table.frame).fit(table.frame)
    assert coder.columns_ == ["intercept", "age", "pc1", "pc2", "sex[F]", "batch[b1]"]
    assert list(coder.get_feature_names_out()) == coder.columns_
    np.testing.assert_array_equal(
        coder.transform(table.frame),
        [
            [1, 70, 0.00, 0.01, 1, -1],
            [1, 47, -0.01, 0.02, -1, 1],
            [1, 61.5, 0.03, 0.00, -1, -1],
            [1, 50, 0.01, -0.02, 1, 1],
        ],
    )


def _fit_and_predict(frame: pd.DataFrame, train: np.ndarray, y: np.ndarray, design_of) -> np.ndarray:
    """OLS of y on the training subjects' design; predictions for everyone."""
    train_design, all_design = design_of(frame.iloc[train]), design_of(frame)
    return all_design @ np.linalg.lstsq(train_design, y[train], rcond=None)[0]


def _rename(frame: pd.DataFrame, column: str, old: str, new: str) -> pd.DataFrame:
    renamed = frame.copy()
    values = renamed[column].astype(str).replace(old, new)
    renamed[column] = pd.Categorical(values, categories=sorted(values.unique()))
    return renamed


def _treatment_design():
    """The former coding: one-hot without the first sorted level (the whole table's), for comparison."""
    def design(frame: pd.DataFrame) -> np.ndarray:
        columns = [np.ones(len(frame)), frame["age"].to_numpy()]
        for name in ("sex", "batch"):
            columns += [(frame[name] == level).to_numpy(float) for level in frame[name].cat.categories[1:]]
        return np.column_stack(columns)
    return design


def test_renaming_a_level_changes_no_prediction_even_for_an_unseen_level():
    frame = cohort_frame(200, seed=3)
    rng = np.random.default_rng(0)
    effect = {"b1": 2.0, "b2": -1.0, "b3": 5.0}
    y = frame["age"].to_numpy() * 0.1 + frame["batch"].astype(str).map(effect).to_numpy() + rng.normal(0, 1, 200)
    train = np.flatnonzero(frame["batch"] != "b1")  # b1 is held out whole, as a batch goes with its site
    coder = CovariateCoder(categorical=["sex", "batch"], numeric=["age"])
    before = _fit_and_predict(frame, train, y, lambda f: clone(coder).fit(frame.iloc[train]).transform(f))
    renamed = _rename(frame, "batch", "b1", "z_batch")  # the unseen level now sorts last instead of first
    after = _fit_and_predict(renamed, train, y, lambda f: clone(coder).fit(renamed.iloc[train]).transform(f))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-10)
    renamed_seen = _rename(frame, "batch", "b2", "a_batch")  # a fitted level now sorts first
    again = _fit_and_predict(renamed_seen, train, y,
                             lambda f: clone(coder).fit(renamed_seen.iloc[train]).transform(f))
    np.testing.assert_allclose(again, before, rtol=0, atol=1e-10)

    # The unseen level is predicted at the average of the fitted levels, not at one of them.
    fitted = clone(coder).fit(frame.iloc[train])
    unseen = np.flatnonzero(frame["batch"] == "b1")
    as_level = {}
    for level in ("b2", "b3"):
        moved = frame.iloc[unseen].copy()
        moved["batch"] = pd.Categorical([level] * len(unseen), categories=frame["batch"].cat.categories)
        beta = np.linalg.lstsq(fitted.transform(frame.iloc[train]), y[train], rcond=None)[0]
        as_level[level] = fitted.transform(moved) @ beta
    np.testing.assert_allclose(before[unseen], (as_level["b2"] + as_level["b3"]) / 2, atol=1e-10)

    # The former coding predicted the unseen level as the baseline, so the renaming moved its subjects.
    old_before = _fit_and_predict(frame, train, y, _treatment_design())
    old_after = _fit_and_predict(renamed, train, y, _treatment_design())
    assert np.abs(old_after[unseen] - old_before[unseen]).max() > 1.0


def test_unseen_levels_are_counted_and_levels_come_from_the_whole_table():
    frame = cohort_frame(60, seed=1)
    train = frame.iloc[np.flatnonzero(frame["batch"] != "b3")]
    coder = CovariateCoder(categorical=["batch"]).fit(train)
    assert coder.levels_ == {"batch": ["b1", "b2", "b3"]}
    assert coder.fitted_levels_ == {"batch": ["b1", "b2"]}
    heldout = frame.iloc[np.flatnonzero(frame["batch"] != "b1")]
    assert coder.unseen_level_counts(heldout) == {"batch": {"b3": int((frame["batch"] == "b3").sum())}}
    np.testing.assert_array_equal(coder.transform(frame.iloc[np.flatnonzero(frame["batch"] == "b3")])[:, 1], 0.0)
    with pytest.raises(ValueError, match=r"covariate batch has level\(s\) b9 outside the coder's levels"):
        coder.transform(frame.assign(batch=["b9"] * len(frame)))


def test_coder_json_round_trip_codes_identically():
    frame = cohort_frame(80, seed=2)
    coder = covariate_coder(frame).fit(frame.iloc[:50])
    again = CovariateCoder.from_json(coder.to_json())
    assert again.columns_ == coder.columns_
    np.testing.assert_array_equal(again.transform(frame), coder.transform(frame))


def test_errors_give_the_line_an_editor_shows_counting_blank_lines_crlf_and_gzip(tmp_path: Path):
    """Lines as an editor numbers them (the header is line 1; blank lines count), whatever the line endings or
    compression, as the gene set's errors say them; a parquet file's rows count from 1."""
    rows = ["\t".join(str(v) for v in row) for row in [*ROWS, ["S2", 40, "F", 0, 0, "b1"]]]
    text = "\r\n".join(["\t".join(HEADER), rows[0], "", rows[1], *rows[2:], ""]) + "\r\n"
    plain = tmp_path / "covariates.tsv"
    plain.write_bytes(text.encode())
    packed = tmp_path / "covariates.tsv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        with pytest.raises(InputError) as caught:
            load_covariates(path, TWO_PCS)
        assert str(caught.value) == (f"{path}: subject S2 on lines 4 and 7 of {path.name}: subject id appears more "
                                     "than once. Fix: keep exactly one row per subject")
    parquet = tmp_path / "covariates.parquet"
    pd.DataFrame([*ROWS, ["S2", 40, "F", 0, 0, "b1"]], columns=HEADER).to_parquet(parquet)
    with pytest.raises(InputError, match=re.escape("subject S2 on rows 2 and 5 of covariates.parquet: ")):
        load_covariates(parquet, TWO_PCS)


def test_a_value_spanning_lines_falls_back_to_data_rows(tmp_path: Path):
    """A quoted value holding a line break makes lines and rows disagree: errors then count data rows, and say so."""
    path = tmp_path / "c.csv"
    path.write_text("subject_id,age,sex,pc1,pc2,batch\nS1,50,F,0,0,\"b\n1\"\nS1,60,M,0,0,b2\n")
    with pytest.raises(InputError, match=re.escape("subject S1 on data rows 1 and 2 of c.csv: ")):
        load_covariates(path, TWO_PCS)


def test_every_row_error_names_the_line(tmp_path: Path):
    """Text in a number (with the further offenders), a missing value and a blank id: each by its line."""
    rows = [list(r) for r in ROWS]
    rows[1][3], rows[3][3] = "x", "y"
    path = write_table(tmp_path / "c.csv", HEADER, rows)
    with pytest.raises(InputError, match=re.escape(f"{path}: line 3 of c.csv (subject S2), column 'pc1': 'x' is not "
                                                   "a number (also line 5 'y')")):
        load_covariates(path, TWO_PCS)
    rows[1][3], rows[3][3], rows[2][0] = 0.1, 0.2, None
    path = write_table(tmp_path / "c.csv", HEADER, rows)
    with pytest.raises(InputError, match=re.escape(f"{path}: line 4 of c.csv, column 'subject_id': subject id is "
                                                   "missing")):
        load_covariates(path, TWO_PCS)


def test_folds_the_pca_cannot_fit_are_named():
    """A fold left without held-out subjects, and one whose training subjects do not outnumber the covariate design's
    rank (or, when the PCA comes first, the mean)."""
    frame = cohort_frame(40, n_sites=4)
    folds = pd.DataFrame({"subject_id": frame["subject_id"], "fold": np.arange(40) % 4})
    assert unfittable_folds(frame, folds, removes_design=True) == []
    only_fold_0 = frame[folds["fold"] == 0]
    assert unfittable_folds(only_fold_0, folds, removes_design=True) == [
        "fold 0 keeps no training subject", *(f"fold {f} keeps no held-out subject" for f in (1, 2, 3))]
    # Fold 1's ten subjects and two of fold 0: fold 1 then trains on two subjects, as many as its design's rank.
    few = frame[(folds["fold"] == 1) | frame.index.isin([0, 4])]
    assert unfittable_folds(few, folds, removes_design=True) == [
        "fold 1 keeps 2 training subject(s) for a covariate design of rank 2",
        "fold 2 keeps no held-out subject", "fold 3 keeps no held-out subject"]
    assert unfittable_folds(few, folds, removes_design=False) == [
        "fold 2 keeps no held-out subject", "fold 3 keeps no held-out subject"]
