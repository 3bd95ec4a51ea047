"""The fold loop: per fold fits, output rows as Arrow batches, unseen levels, invariance to level names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kb_assets.errors import InputError
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.projection import FOLD_SCORES_SCHEMA, ResidualizedPCA, fit_folds
from kb_assets_tests.stats.conftest import batch_by_site, cohort_frame, factored_matrix

CODER = CovariateCoder(categorical=["sex", "batch"], numeric=["age", "pc1", "pc2"])


def _cohort(n: int = 360, seed: int = 0):
    """Batch ≈ site over 15 sites and 8 batches, so held-out sites take batch levels out of training."""
    frame = batch_by_site(cohort_frame(n, seed=seed, n_sites=15), 8)
    effect = frame["batch"].cat.codes.to_numpy() * 1.7 + frame["sex"].cat.codes.to_numpy()
    matrix = factored_matrix(n, n_genes=5, hidden=16, distinct=(10, 50), seed=seed, batch_effect=effect)
    return frame, matrix


def _table(fits, ids) -> pa.Table:
    return pa.Table.from_batches([b for fit in fits for b in fit.record_batches(ids, max_rows=50)],
                                 schema=FOLD_SCORES_SCHEMA)


def test_every_subject_is_scored_once_per_fold_as_list_rows():
    frame, matrix = _cohort()
    folds = assign_folds(frame, k=5, seed=42)
    fits = list(fit_folds(matrix, frame, folds, CODER, ResidualizedPCA(6)))
    assert [fit.fold for fit in fits] == [0, 1, 2, 3, 4]
    table = _table(fits, frame["subject_id"])
    assert table.schema == FOLD_SCORES_SCHEMA and table.num_rows == 5 * len(frame)
    rows = table.to_pandas()
    assert rows.groupby("fold")["subject_id"].apply(lambda s: s.is_unique and len(s) == len(frame)).all()
    held_out = rows[rows["split"] == "heldout"]
    assert held_out["subject_id"].is_unique and set(held_out["subject_id"]) == set(frame["subject_id"])
    fold_of = dict(zip(folds["subject_id"], folds["fold"]))
    assert (held_out["fold"] == held_out["subject_id"].map(fold_of)).all()
    fit = fits[2]
    assert (rows.loc[rows["fold"] == 2, "n_components"] == fit.n_components).all()
    embedding = np.vstack(rows.loc[(rows["fold"] == 2) & (rows["split"] == "train"), "embedding"].to_list())
    np.testing.assert_array_equal(embedding, fit.train_scores)
    assert fit.train_scores.dtype == np.float32 and fit.heldout_scores.shape == (len(fit.heldout_rows), 6)
    expected = fit.model.transform(matrix.take_rows(fit.heldout_rows),
                                   fit.coder.transform(frame.iloc[fit.heldout_rows]))
    np.testing.assert_allclose(fit.heldout_scores, expected, rtol=1e-6, atol=1e-6)


def test_folds_keep_their_own_number_of_components_and_say_why():
    frame, matrix = _cohort(n=120)
    folds = assign_folds(frame, k=5, seed=42)
    fits = list(fit_folds(matrix, frame, folds, CODER, ResidualizedPCA(512)))
    for fit in fits:
        summary = fit.summary()
        # The oracle: the rank of the explicitly residualized training matrix.
        design = fit.coder.transform(frame.iloc[fit.train_rows])
        X = matrix.take_rows(fit.train_rows).dense_rows(slice(None)).astype(np.float64)
        X -= X.mean(0)
        X -= design @ np.linalg.lstsq(design, X, rcond=None)[0]
        assert summary["n_components"] == fit.train_scores.shape[1] == np.linalg.matrix_rank(X) < 512
        assert summary["n_components_reason"] in ("distinct gene vectors", "numerical rank")
        assert summary["n_components_requested"] == 512 and summary["n_train"] + summary["n_heldout"] == 120
        assert summary["captured_variance_vs_exact"] == 1.0  # every direction found: the fit is exact
    lengths = {batch.column("n_components")[0].as_py() for fit in fits
               for batch in fit.record_batches(frame["subject_id"])}
    assert lengths == {fit.n_components for fit in fits} and len(lengths) > 1


def test_levels_unseen_in_training_are_reported_with_their_held_out_subjects():
    frame, matrix = _cohort()
    folds = assign_folds(frame, k=5, seed=42)
    for fit in fit_folds(matrix, frame, folds, CODER, ResidualizedPCA(4)):
        heldout = frame.iloc[fit.heldout_rows]
        training_batches = set(frame.iloc[fit.train_rows]["batch"].astype(str))
        expected = heldout.loc[~heldout["batch"].astype(str).isin(training_batches), "batch"].astype(str)
        assert fit.unseen_levels == ({"batch": expected.value_counts().sort_index().to_dict()} if len(expected)
                                     else {})
        assert fit.summary()["heldout_with_unseen_levels"] == len(expected)
    assert any(fit.unseen_levels for fit in fit_folds(matrix, frame, folds, CODER, ResidualizedPCA(4)))


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    """Every level of sex, batch and site renamed so that its sort order changes; the same grouping."""
    renamed = frame.copy()
    for column, rename in (("sex", {"F": "zf", "M": "am"}),
                           ("batch", lambda level: f"z{99 - int(level[5:])}"),
                           ("site", lambda level: f"x{99 - int(level[4:])}")):
        values = renamed[column].astype(str).map(rename)
        renamed[column] = pd.Categorical(values, categories=sorted(values.unique()))
    return renamed


@pytest.mark.parametrize("order", ["residualize_then_pca", "pca_then_residualize"])
def test_renaming_levels_changes_no_score(order):
    frame, matrix = _cohort()
    pca = ResidualizedPCA(6, order=order)
    before = _table(fit_folds(matrix, frame, assign_folds(frame, k=5, seed=42), CODER, pca), frame["subject_id"])
    renamed = _renamed(frame)
    after = _table(fit_folds(matrix, renamed, assign_folds(renamed, k=5, seed=42), CODER, pca),
                   renamed["subject_id"])
    assert after.select(["fold", "subject_id", "split"]).equals(before.select(["fold", "subject_id", "split"]))
    # The float32 outputs are roundings of float64 scores equal to ~1e-14 (next test): at most one ulp apart.
    scores = [np.vstack(table.column("embedding").to_pylist()) for table in (before, after)]
    assert np.abs(scores[1] - scores[0]).max() <= np.spacing(np.abs(scores[0]).max())


def test_renaming_changes_no_float64_score():
    frame, matrix = _cohort()
    renamed = _renamed(frame)
    fits = [list(fit_folds(matrix, f, assign_folds(f, k=5, seed=42), CODER, ResidualizedPCA(6)))
            for f in (frame, renamed)]
    for before, after in zip(*fits):
        assert before.unseen_levels.keys() == after.unseen_levels.keys()
        for rows, split in ((before.heldout_rows, "heldout"), (before.train_rows, "train")):
            scores = [fit.model.transform(matrix.take_rows(rows), fit.coder.transform(f.iloc[rows]))
                      for fit, f in ((before, frame), (after, renamed))]
            np.testing.assert_allclose(scores[1], scores[0], rtol=0, atol=1e-10, err_msg=split)


def test_the_fold_fit_saves_its_coder_with_the_pca(tmp_path: Path):
    frame, matrix = _cohort(n=150)
    fit = next(fit_folds(matrix, frame, assign_folds(frame, k=5, seed=42), CODER, ResidualizedPCA(4)))
    path = fit.save(tmp_path / "fold-0.npz")
    model = ResidualizedPCA.load(path)
    coder = CovariateCoder.from_json(ResidualizedPCA.saved_coder_json(path))
    heldout = fit.heldout_rows
    again = model.transform(matrix.take_rows(heldout), coder.transform(frame.iloc[heldout]), dtype=np.float32)
    np.testing.assert_array_equal(again, fit.heldout_scores)


def test_folds_must_cover_the_matrix_subjects():
    frame, matrix = _cohort(n=100)
    folds = assign_folds(frame.iloc[1:], k=5, seed=42)
    with pytest.raises(InputError, match=r"subjects S0000: the subject matrix and the fold assignment disagree "
                                         r"\(1 subject\(s\) without a fold, 0 fold subject\(s\) not in the matrix\)"):
        next(fit_folds(matrix, frame, folds, CODER, ResidualizedPCA(4)))
