"""The brain feature table: formats, id mapping, the rows handed out, and one exact message per kind of bad input;
and the synthetic generator used by the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kb_assets.demo.brain import null_brain_table, planted_brain_table
from kb_assets.errors import InputError
from kb_assets.stats.brain import load_brain_table
from kb_assets_tests.stats.conftest import write_table

HEADER = ["eid", "thickness_lh", "volume_hippo", "fa_cst"]
ROWS = [
    ["007", 2.51, 4012.0, 0.45],
    ["012", 2.43, 3890.5, 0.47],
    ["031", 2.60, 4120.0, 0.44],
]


def _load(path: Path, **kwargs):
    return load_brain_table(path, subject_id="eid", **kwargs)


@pytest.mark.parametrize("name, sep", [("b.csv", ","), ("b.tsv", "\t"), ("b.txt", "\t")])
def test_text_and_parquet_read_alike_with_ids_kept_as_text(tmp_path: Path, name: str, sep: str):
    text = _load(write_table(tmp_path / name, HEADER, ROWS, sep=sep))
    pd.DataFrame(ROWS, columns=HEADER).to_parquet(tmp_path / "b.parquet")
    parquet = _load(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(text.frame, parquet.frame)
    assert text.subject_ids == ["007", "012", "031"]
    assert text.features == ["thickness_lh", "volume_hippo", "fa_cst"]
    assert text.frame["volume_hippo"].dtype == np.float64


def test_matrix_follows_the_requested_order_and_names_absent_subjects(tmp_path: Path):
    table = _load(write_table(tmp_path / "b.csv", HEADER, ROWS), features=["fa_cst", "thickness_lh"])
    np.testing.assert_array_equal(table.matrix(["031", "007"]), [[0.44, 2.60], [0.45, 2.51]])
    with pytest.raises(InputError) as caught:
        table.matrix(["007", "999", "998"])
    assert str(caught.value) == (
        f"{tmp_path / 'b.csv'}: subject 999, 998: not in the brain table (2 of 3 subjects). Fix: analyse only "
        "subjects with brain data (those in both tables), or add their rows"
    )


def test_missing_id_column_names_the_columns_and_the_recipe_key(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, ROWS)
    with pytest.raises(InputError) as caught:
        load_brain_table(path)
    assert str(caught.value) == (
        f"{path}: column 'subject_id': not found; the file has columns eid, thickness_lh, volume_hippo, fa_cst. "
        "Fix: set brain.columns.subject_id to the file's subject id column"
    )


def test_missing_feature_column(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, ROWS)
    with pytest.raises(InputError, match=r"column\(s\) 'fa_left': not found among the feature columns .*"
                                         r"Fix: list the file's feature columns in brain.columns.features"):
        _load(path, features=["thickness_lh", "fa_left"])


def test_blank_subject_id_names_the_row(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, [ROWS[0], [None, 2.4, 3900, 0.4]])
    with pytest.raises(InputError) as caught:
        _load(path)
    assert str(caught.value) == (
        f"{path}: line 3 of b.csv, column 'eid': subject id is missing (1 row(s) without an id). Fix: give every row a "
        "subject id"
    )


def test_duplicated_subject_names_the_rows(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, [*ROWS, ["012", 2.5, 4000, 0.46]])
    with pytest.raises(InputError) as caught:
        _load(path)
    assert str(caught.value) == (
        f"{path}: subject 012 on lines 3 and 5 of b.csv: subject id appears more than once. Fix: keep exactly one "
        "row per subject"
    )


def test_text_in_a_feature_names_row_subject_column_and_value(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, [ROWS[0], ["012", "2.4mm", 3890.5, 0.47], ROWS[2]])
    with pytest.raises(InputError) as caught:
        _load(path)
    assert str(caught.value) == (
        f"{path}: line 3 of b.csv (subject 012), column 'thickness_lh': '2.4mm' is not a number. Fix: write brain "
        "features as numbers; leave unknown values empty (brain.missing decides what happens to them)"
    )


def test_all_missing_and_constant_columns(tmp_path: Path):
    rows = [[r[0], r[1], None, 0.5] for r in ROWS]
    path = write_table(tmp_path / "b.csv", HEADER, rows)
    with pytest.raises(InputError) as caught:
        _load(path)
    assert str(caught.value) == (
        f"{path}: column 'volume_hippo': every value is missing (3 rows). Fix: fill in the column, or leave it out "
        "of brain.columns.features"
    )
    with pytest.raises(InputError) as caught:
        _load(path, features=["thickness_lh", "fa_cst"])
    assert str(caught.value) == (
        f"{path}: column 'fa_cst': every value is 0.5: a constant carries no information and cannot be "
        "standardized. Fix: leave it out of brain.columns.features"
    )


def test_missing_values_fail_or_drop_the_subject(tmp_path: Path):
    path = write_table(tmp_path / "b.csv", HEADER, [ROWS[0], ["012", 2.43, None, 0.47], ROWS[2]])
    with pytest.raises(InputError) as caught:
        _load(path)
    assert str(caught.value) == (
        f"{path}: line 3 of b.csv (subject 012), column(s) volume_hippo: missing value (1 row(s) have missing values). "
        "Fix: fill them in, or set brain.missing: drop to leave those subjects out (they are counted)"
    )
    table = _load(path, missing="drop")
    assert table.subject_ids == ["007", "031"]
    assert table.dropped == {"missing volume_hippo": ["012"]}


def test_unknown_file_type_and_absent_file(tmp_path: Path):
    with pytest.raises(InputError, match="brain table not found. Fix: point inputs.brain at an existing file"):
        _load(tmp_path / "absent.csv")
    (tmp_path / "b.xlsx").write_text("x")
    with pytest.raises(InputError, match="unknown brain table type '.xlsx'"):
        _load(tmp_path / "b.xlsx")


def test_demo_generator_is_deterministic_and_plants_only_where_asked():
    rng = np.random.default_rng(0)
    n = 2000
    ids = [f"S{i}" for i in range(n)]
    carriers = (rng.random((n, 2)) < 0.2).astype(float)
    covariates = rng.normal(size=(n, 2))
    planted = planted_brain_table(ids, carriers, n_features=10, n_affected=3, effect=0.8, covariates=covariates,
                                  seed=4)
    pd.testing.assert_frame_equal(planted, planted_brain_table(ids, carriers, 10, 3, 0.8, covariates, seed=4))
    null = null_brain_table(ids, 10, covariates, seed=4)
    assert list(null.columns) == ["subject_id", *(f"idp_{j:03d}" for j in range(1, 11))]
    signal = carriers.sum(axis=1)
    planted_r = [abs(np.corrcoef(signal, planted[f"idp_{j:03d}"])[0, 1]) for j in range(1, 11)]
    null_r = [abs(np.corrcoef(signal, null[f"idp_{j:03d}"])[0, 1]) for j in range(1, 11)]
    assert min(planted_r[:3]) > 0.15 and max(planted_r[3:]) < 0.1 and max(null_r) < 0.1
    # The same seed gives the same noise: the planted table is the null one plus the signal on 3 features.
    pd.testing.assert_frame_equal(planted.iloc[:, 4:], null.iloc[:, 4:])
    with pytest.raises(ValueError, match="nothing to plant"):
        planted_brain_table(ids, np.zeros((n, 2)), seed=4)
