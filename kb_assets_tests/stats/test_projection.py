"""ResidualizedPCA against exact numpy SVDs of the explicitly residualized dense matrix, on both inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kb_assets.errors import InputError
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.projection import ORDERS, SCALES, ResidualizedPCA
from kb_assets.stats.subject_matrix import FactoredSubjectMatrix, GeneBlock
from kb_assets_tests.stats.conftest import cohort_frame, factored_matrix


def _explicit(X: np.ndarray, design: np.ndarray, order: str, scale: str) -> np.ndarray:
    """The matrix the PCA decomposes, formed densely in float64: centered, scaled, residualized (or not)."""
    Z = X.astype(np.float64)
    Z = Z - Z.mean(axis=0)
    if scale == "standardize":
        sd = Z.std(axis=0)
        Z = Z / np.where(sd > 0, sd, 1.0)
    if order == "residualize_then_pca":
        Z = Z - design @ np.linalg.lstsq(design, Z, rcond=None)[0]
    return Z


def _cohort(n: int = 400, n_genes: int = 8, hidden: int = 32, seed: int = 0):
    frame = cohort_frame(n, seed=seed)
    coder = CovariateCoder(categorical=["sex", "batch"], numeric=["age", "pc1"]).fit(frame)
    design = coder.transform(frame)
    matrix = factored_matrix(n, n_genes=n_genes, hidden=hidden, distinct=(20, 120), seed=seed,
                             batch_effect=frame["batch"].cat.codes.to_numpy() * 2.0 + frame["sex"].cat.codes)
    return frame, coder, design, matrix


def _max_abs_correlation(values: np.ndarray, design: np.ndarray) -> float:
    covariates = design[:, design.std(axis=0) > 0]
    v = values - values.mean(axis=0)
    c = covariates - covariates.mean(axis=0)
    return float(np.abs((v.T @ c) / np.outer(np.linalg.norm(v, axis=0), np.linalg.norm(c, axis=0))).max())


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("order", ORDERS)
def test_matches_an_exact_svd_of_the_explicitly_residualized_matrix(order, scale):
    _, coder, design, matrix = _cohort()
    model = ResidualizedPCA(12, order=order, scale=scale).fit(matrix, design, coder.columns_)
    Z = _explicit(matrix.dense_rows(slice(None)), design, order, scale)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    assert model.rank_limit_ > 4 * model.krylov_dimension_ / 5  # the Krylov space is far from the whole space
    optimum = np.sum(s[:12] ** 2)
    captured = np.sum((Z @ model.components_.T) ** 2)
    assert captured / optimum >= 0.999
    assert model.captured_variance_vs_exact_bound_ <= captured / optimum + 1e-9
    assert captured / optimum - 1e-3 < model.captured_variance_vs_exact_ <= captured / optimum + 1e-5
    np.testing.assert_allclose(model.explained_variance_ratio_[:5], s[:5] ** 2 / np.sum(s**2), rtol=1e-4)
    np.testing.assert_allclose(model.singular_values_[:5], s[:5], rtol=1e-4)
    # The leading components (well separated here) are the exact ones: cosines of the principal angles ≈ 1.
    cosines = np.linalg.svd(model.components_[:5] @ vt[:5].T, compute_uv=False)
    assert cosines.min() > 1 - 1e-6
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(12), atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
def test_training_scores_are_orthogonal_to_every_covariate(order):
    _, coder, design, matrix = _cohort()
    plain = ResidualizedPCA(10).fit_transform(matrix, np.ones((len(design), 1)))
    assert _max_abs_correlation(plain, design) > 0.3  # without residualization, the covariates show in the PCs
    scores = ResidualizedPCA(10, order=order).fit_transform(matrix, design)
    assert _max_abs_correlation(scores, design) < 1e-10


def test_a_single_rare_carrier_takes_no_leading_component_unless_standardized():
    # 300 subjects, 3 genes × 64: two genes vary through many carriers; in the third one subject's vector is
    # the reference shifted by 1e-4. Z-scoring makes that carrier's gene 64 perfectly correlated unit-variance
    # features, the largest direction of all.
    n = 300
    varying = factored_matrix(n, n_genes=2, hidden=64, distinct=(30, 80), seed=5)
    reference = np.random.default_rng(6).normal(0, 1, 64).astype(np.float32)
    carrier = GeneBlock("RARE", np.vstack([reference, reference + np.float32(1e-4)]), np.array([17]),
                        np.array([1], np.int32))
    matrix = FactoredSubjectMatrix(n, [varying.gene_block(0), varying.gene_block(1), carrier])
    design = np.ones((n, 1))
    others = np.arange(n) != 17

    covariance = ResidualizedPCA(5).fit(matrix, design)
    scores = covariance.transform(matrix, design)
    assert np.abs(scores[17, :2]).max() <= np.abs(scores[others, :2]).max()
    assert np.abs(covariance.components_[:2, 128:]).max() < 1e-3  # the rare gene has no weight on PC1, PC2
    assert (covariance.scale_ == 1).all()

    standardized = ResidualizedPCA(5, scale="standardize").fit(matrix, design)
    z_scores = standardized.transform(matrix, design)
    assert abs(z_scores[17, 0]) > 5 * np.abs(z_scores[others, 0]).max()


def test_dense_and_factored_inputs_give_the_same_projector():
    _, coder, design, matrix = _cohort(seed=1)
    dense = matrix.dense_rows(slice(None))
    factored = ResidualizedPCA(10).fit(matrix, design)
    plain = ResidualizedPCA(10).fit(dense, design)
    np.testing.assert_allclose(plain.mean_, factored.mean_, rtol=1e-6, atol=1e-6)
    # Both sketches are float32 (rounded differently); the fitted quantities agree to that precision.
    np.testing.assert_allclose(plain.singular_values_, factored.singular_values_, rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(plain.components_ * factored.components_, axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(plain.transform(dense, design), factored.transform(matrix, design),
                               rtol=1e-4, atol=1e-4 * factored.singular_values_[0] / np.sqrt(len(design)))


def test_held_out_scores_follow_the_formula_in_float64():
    _, coder, design, matrix = _cohort(seed=2)
    train, heldout = np.arange(0, 300), np.arange(300, 400)
    model = ResidualizedPCA(8, scale="standardize").fit(matrix.take_rows(train), design[train])
    x = matrix.dense_rows(heldout).astype(np.float64)
    expected = ((x - model.mean_) / model.scale_ - design[heldout] @ model.coef_) @ model.components_.T
    np.testing.assert_allclose(model.transform(matrix.take_rows(heldout), design[heldout]), expected,
                               rtol=1e-10, atol=1e-10)


def test_held_out_subjects_never_influence_the_fit():
    _, coder, design, matrix = _cohort(seed=3)
    train, heldout = np.arange(0, 300), np.arange(300, 400)
    # Move every held-out subject of every gene to another vector: a different matrix, the same training rows.
    blocks = []
    for gene in range(len(matrix.gene_ids)):
        block = matrix.gene_block(gene)
        keep = block.rows < 300
        rows = np.concatenate([block.rows[keep], heldout])
        codes = np.concatenate([block.codes[keep], np.full(len(heldout), len(block.vectors) - 1, np.int32)])
        blocks.append(GeneBlock(block.gene_id, block.vectors, rows, codes))
    changed = FactoredSubjectMatrix(400, blocks)
    before = ResidualizedPCA(10).fit(matrix.take_rows(train), design[train])
    after = ResidualizedPCA(10).fit(changed.take_rows(train), design[train])
    for name in ("mean_", "coef_", "components_", "explained_variance_ratio_", "captured_variance_vs_exact_"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
    held_before = before.transform(matrix.take_rows(heldout), design[heldout])
    held_after = after.transform(changed.take_rows(heldout), design[heldout])
    assert np.abs(held_before - held_after).max() > 0.1


def test_memmapped_input_gives_the_in_memory_fit(tmp_path: Path):
    _, coder, design, matrix = _cohort(seed=4)
    dense = matrix.dense_rows(slice(None))
    np.save(tmp_path / "X.npy", dense)
    mapped = ResidualizedPCA(6).fit(np.load(tmp_path / "X.npy", mmap_mode="r"), design)
    in_memory = ResidualizedPCA(6).fit(dense, design)
    np.testing.assert_array_equal(mapped.components_, in_memory.components_)


@pytest.mark.parametrize("spectrum", ["power 1/4", "low rank + noise"])
def test_default_settings_reach_99_9_percent_where_few_passes_do_not(spectrum):
    rng = np.random.default_rng(0)
    n, n_features, k = 500, 400, 40
    j = np.arange(1, n_features + 1)
    sigma = j**-0.25 if spectrum == "power 1/4" else np.where(j <= 20, 10 * np.geomspace(3, 0.3, 20)[
        np.minimum(j, 20) - 1], 1 + 0.5 * (1 - j / n_features))
    u = np.linalg.qr(rng.normal(size=(n, n_features)))[0]
    v = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
    X = ((u * sigma) @ v.T).astype(np.float32)
    design = np.ones((n, 1))
    s = np.linalg.svd(X.astype(np.float64) - X.mean(0), compute_uv=False)
    optimum = np.sum(s[:k] ** 2)

    def ratio(model):
        return np.sum(((X - X.mean(0)) @ model.components_.T).astype(np.float64) ** 2) / optimum

    default = ResidualizedPCA(k).fit(X, design)
    assert ratio(default) >= 0.999
    assert default.captured_variance_vs_exact_bound_ <= ratio(default) + 1e-6
    # The estimate is conservative on slowly converging spectra and never more than rounding optimistic.
    assert ratio(default) - 1e-3 < default.captured_variance_vs_exact_ <= ratio(default) + 1e-5
    assert ratio(ResidualizedPCA(k, power_iterations=0).fit(X, design)) < 0.999  # the check can fail


def test_components_are_limited_and_the_reason_reported(cohort):
    frame, design, names, X = cohort
    few = ResidualizedPCA(512).fit(X[:30], design[:30])
    # 30 subjects minus the 8 design columns (intercept, age, 3 PCs, sex, 2 batch effects) leave rank 22.
    assert (few.n_components_, few.n_components_reason_, few.rank_limit_) == (22, "training subjects − design rank",
                                                                              22)
    assert ResidualizedPCA(512, order="pca_then_residualize").fit(X[:30], design[:30]).n_components_ == 29
    constant = X.copy()
    constant[:, 5] = 7.25
    model = ResidualizedPCA(60).fit(constant, design)
    assert (model.n_components_, model.n_components_reason_) == (59, "non-constant features")
    assert model.mean_[5] == 7.25 and np.abs(model.components_[:, 5]).max() < 1e-12  # rounding only
    duplicated = np.hstack([X[:, :10], X[:, :10]])
    assert ResidualizedPCA(15).fit(duplicated, design).n_components_reason_ == "numerical rank"
    assert ResidualizedPCA(5).fit(X, design).n_components_reason_ == "requested"
    few_vectors = factored_matrix(200, n_genes=3, hidden=16, distinct=(3, 5), seed=7)
    by_vectors = ResidualizedPCA(40).fit(few_vectors, np.ones((200, 1)))
    assert (by_vectors.n_components_, by_vectors.n_components_reason_) == (few_vectors.rank_bound(),
                                                                           "distinct gene vectors")
    assert by_vectors.captured_variance_vs_exact_ == 1.0  # the space holds every direction: exact


def test_save_load_round_trip_transforms_identically(tmp_path: Path):
    frame, coder, design, matrix = _cohort(seed=5)
    model = ResidualizedPCA(7, order="pca_then_residualize", scale="standardize").fit(matrix, design, coder.columns_)
    path = model.save(tmp_path / "fold.npz", coder_json=coder.to_json())
    loaded = ResidualizedPCA.load(path)
    assert loaded.get_params() == model.get_params()
    assert (loaded.design_names_, loaded.n_components_reason_, loaded.n_components_) == (coder.columns_,
                                                                                       "requested", 7)
    np.testing.assert_array_equal(loaded.transform(matrix, design), model.transform(matrix, design))
    again = CovariateCoder.from_json(ResidualizedPCA.saved_coder_json(path))
    np.testing.assert_array_equal(again.transform(frame), design)
    with np.load(path, allow_pickle=False) as saved:  # plain arrays only: loading needs no pickle
        assert {"components_", "coef_", "mean_", "scale_"} <= set(saved.files)


def test_bad_inputs_are_refused(cohort):
    _, design, _, X = cohort
    with pytest.raises(ValueError, match="the design needs an intercept column"):
        ResidualizedPCA(5).fit(X, design[:, 1:])
    broken = X.copy()
    broken[4, 17] = np.nan
    with pytest.raises(InputError, match=r"feature column 17: the subject matrix holds a non-finite value"):
        ResidualizedPCA(5).fit(broken, design)
    with pytest.raises(ValueError, match="scale must be one of"):
        ResidualizedPCA(5, scale="zscore").fit(X, design)
