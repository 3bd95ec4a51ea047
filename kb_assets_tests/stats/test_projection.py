import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from kb_assets.errors import InputError
from kb_assets.stats import projection
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.projection import ORDERS, Projector, fit_fold_projections, fit_projector


def _max_abs_correlation(values: np.ndarray, design: np.ndarray) -> float:
    """Largest |Pearson r| between any column of `values` and any non-constant design column."""
    covariates = design[:, design.std(axis=0) > 0]
    v = values - values.mean(axis=0)
    c = covariates - covariates.mean(axis=0)
    r = (v.T @ c) / np.outer(np.linalg.norm(v, axis=0), np.linalg.norm(c, axis=0))
    return float(np.abs(r).max())


def _first_fold(cohort, order: str, X=None, n_components: int = 20):
    frame, design, names, cohort_X = cohort
    folds = assign_folds(frame, k=5, seed=42)
    ids = frame["subject_id"].to_numpy()
    X = cohort_X if X is None else X
    return next(fit_fold_projections(X, ids, design, folds, n_components, order, seed=3, covariate_names=names))


@pytest.mark.parametrize("order", ORDERS)
def test_training_scores_are_uncorrelated_with_every_covariate(cohort, order):
    frame, design, _, X = cohort
    result = _first_fold(cohort, order)
    train_design = design[np.isin(frame["subject_id"], result.train_ids)]
    standardized = (X - X.mean(0)) / X.std(0)
    assert _max_abs_correlation(standardized, design) > 0.3  # the covariates do move the raw features
    assert _max_abs_correlation(result.train_scores, train_design) < 1e-8


def test_residualized_features_are_uncorrelated_with_every_covariate(cohort):
    frame, design, _, X = cohort
    result = _first_fold(cohort, "residualize_then_pca")
    rows = np.flatnonzero(np.isin(frame["subject_id"], result.train_ids))
    residuals = result.projector.residuals(X, design[rows], rows=rows)
    assert _max_abs_correlation(residuals, design[rows]) < 1e-8
    with pytest.raises(ValueError, match="only with order='residualize_then_pca'"):
        _first_fold(cohort, "pca_then_residualize").projector.residuals(X, design[rows], rows=rows)


@pytest.mark.parametrize("order", ORDERS)
def test_components_are_orthonormal(cohort, order):
    components = _first_fold(cohort, order).projector.components
    assert components.shape == (20, 60)
    assert np.linalg.norm(components @ components.T - np.eye(20)) < 1e-6


def test_changing_held_out_subjects_changes_nothing_fitted(cohort):
    frame, design, names, X = cohort
    before = _first_fold(cohort, "residualize_then_pca")
    held_out = np.isin(frame["subject_id"], before.heldout_ids)
    perturbed = X.copy()
    perturbed[held_out] = np.random.default_rng(9).normal(0, 50, (held_out.sum(), X.shape[1]))
    after = _first_fold(cohort, "residualize_then_pca", X=perturbed)
    for field in ("means", "scales", "coefficients", "components", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(before.projector, field), getattr(after.projector, field))
    np.testing.assert_array_equal(before.train_scores, after.train_scores)
    assert np.abs(before.heldout_scores - after.heldout_scores).min() > 0


def test_held_out_scores_follow_the_recipe_formula(cohort):
    frame, design, _, X = cohort
    result = _first_fold(cohort, "residualize_then_pca")
    p = result.projector
    rows = np.isin(frame["subject_id"], result.heldout_ids)
    z = (X[rows].astype(np.float64) - p.means) / p.scales
    expected = (z - design[rows] @ p.coefficients) @ p.components.T
    np.testing.assert_allclose(result.heldout_scores, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ORDERS)
def test_equals_exact_pca_when_the_sketch_spans_the_data(cohort, order):
    _, design, _, X = cohort
    fitted = fit_projector(X, design, n_components=60, order=order)
    z = (X.astype(np.float64) - X.mean(0)) / X.std(0)
    if order == "residualize_then_pca":
        z = z - design @ np.linalg.lstsq(design, z, rcond=None)[0]
    exact = PCA(n_components=10, svd_solver="full").fit(z)
    np.testing.assert_allclose(fitted.explained_variance_ratio[:10], exact.explained_variance_ratio_, rtol=1e-5)
    alignment = np.abs(np.sum(fitted.components[:10] * exact.components_, axis=1))
    np.testing.assert_allclose(alignment, 1.0, atol=1e-6)


def test_components_are_limited_by_training_subjects_and_reported(cohort, caplog):
    _, design, _, X = cohort
    with caplog.at_level(logging.WARNING, logger="kb_assets.stats.projection"):
        fitted = fit_projector(X[:30], design[:30], n_components=512)
    # 30 subjects minus the 8 design columns (intercept, age, sex, 3 PCs, 2 batch indicators) leave rank 22.
    assert (fitted.n_components, fitted.n_components_requested, fitted.n_train) == (22, 512, 30)
    assert "n_components reduced from 512 to 22: 30 training subjects, rank limit 22" in caplog.text
    assert fit_projector(X[:30], design[:30], 512, order="pca_then_residualize").n_components == 29


def test_constant_features_get_no_loading(cohort):
    _, design, _, X = cohort
    X = X.copy()
    X[:, 5] = 7.25
    fitted = fit_projector(X, design, n_components=60)
    assert fitted.n_components == 59  # one of the 60 features carries no variance
    assert fitted.scales[5] == 1.0 and fitted.means[5] == 7.25
    assert np.abs(fitted.components[:, 5]).max() < 1e-12


def test_save_load_round_trip_transforms_identically(cohort, tmp_path: Path):
    frame, design, names, X = cohort
    fitted = _first_fold(cohort, "pca_then_residualize").projector
    loaded = Projector.load(fitted.save(tmp_path / "projector.npz"))
    assert (loaded.order, loaded.covariate_names, loaded.n_train) == (fitted.order, names, fitted.n_train)
    np.testing.assert_array_equal(loaded.transform(X, design), fitted.transform(X, design))


def test_memmapped_and_blocked_input_gives_the_same_fit(cohort, tmp_path: Path, monkeypatch):
    _, design, _, X = cohort
    in_memory = fit_projector(X, design, n_components=10)
    np.save(tmp_path / "X.npy", X)
    monkeypatch.setattr(projection, "_BLOCK_BYTES", 7 * X.shape[1] * 4)  # 7 subjects per block
    streamed = fit_projector(np.load(tmp_path / "X.npy", mmap_mode="r"), design, n_components=10)
    for field in ("means", "scales", "coefficients"):
        np.testing.assert_allclose(getattr(streamed, field), getattr(in_memory, field), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.explained_variance_ratio, in_memory.explained_variance_ratio, rtol=1e-5)


def test_non_finite_value_is_reported(cohort):
    _, design, _, X = cohort
    X = X.copy()
    X[4, 17] = np.nan
    with pytest.raises(InputError, match=r"feature column 17: the subject matrix holds a non-finite value"):
        fit_projector(X, design)


def test_folds_must_cover_the_matrix_subjects(cohort):
    frame, design, names, X = cohort
    folds = assign_folds(frame.iloc[1:], k=5, seed=42)
    with pytest.raises(InputError, match=r"subjects S0000: the subject matrix and the fold assignment disagree "
                                         r"\(1 subject\(s\) without a fold, 0 fold subject\(s\) not in the matrix\)"):
        next(fit_fold_projections(X, frame["subject_id"], design, folds, 10))


def test_fold_rows_cover_every_subject_once_per_fold(cohort):
    frame, design, names, X = cohort
    folds = assign_folds(frame, k=5, seed=42)
    results = list(fit_fold_projections(X, frame["subject_id"], design, folds, 8, covariate_names=names))
    assert [r.fold for r in results] == [0, 1, 2, 3, 4]
    rows = results[2].to_frame()
    assert list(rows.columns) == ["fold", "subject_id", "split", *(f"pc_{i}" for i in range(1, 9))]
    assert len(rows) == 150 and rows["subject_id"].is_unique and (rows["fold"] == 2).all()
    held_out = set(rows.loc[rows["split"] == "heldout", "subject_id"])
    assert held_out == set(folds.loc[folds["fold"] == 2, "subject_id"])
    assert results[2].projector.n_train == 150 - len(held_out)


def test_design_without_intercept_is_refused(cohort):
    _, design, _, X = cohort
    with pytest.raises(ValueError, match="the design needs an intercept column"):
        fit_projector(X, design[:, 1:])


def test_a_level_absent_from_training_is_reported_and_left_uncorrected(cohort, caplog):
    _, design, names, X = cohort
    in_b3 = design[:, names.index("batch[b3]")] == 1
    with caplog.at_level(logging.WARNING, logger="kb_assets.stats.projection"):
        fitted = fit_projector(X[~in_b3], design[~in_b3], n_components=10, covariate_names=names)
    assert "design column(s) batch[b3] are 0 for all" in caplog.text
    assert not fitted.coefficients[names.index("batch[b3]")].any()
