"""Gene–brain alignment: the batched permutation null against a plain refit with cca-zoo and scikit-learn on the
explicitly permuted data, block permutations, p-values, leakage, planted signal, attribution, tables and plots."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from cca_zoo.linear import RidgeCCA
from cca_zoo.model_selection import GridSearchCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, RidgeClassifierCV, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import KFold

from kb_assets.demo.brain import null_brain_table, planted_brain_table
from kb_assets.stats.alignment import (
    AlignmentSettings,
    FoldData,
    align_fold,
    alignment_tables,
    attribute_genes,
    permutation_null,
    summarize_encoders,
)
from kb_assets.stats.alignment_plots import encoder_comparison_png, fold_bars_png, null_distribution_png
from kb_assets.stats.permutation import (
    block_permutations,
    exchangeability_blocks,
    max_statistic_p_values,
    permutation_p_values,
)

SMALL = AlignmentSettings(n_brain_components=4, n_canonical_components=2, gene_shrinkages=(0.0, 0.3, 0.8),
                          inner_splits=3, ridge_alphas=(0.1, 1.0, 10.0, 100.0, 1000.0), n_permutations=99)


def synthetic_cohort(seed: int, n_train: int = 150, n_heldout: int = 50, n_genes: int = 4, hidden: int = 6,
                     n_pcs: int = 8, n_brain: int = 8, effect: float = 0.0, label: str = "binary",
                     n_sites: int = 5, site_effect: float = 0.3) -> tuple[FoldData, np.ndarray]:
    """One fold of a synthetic cohort: gene PCs made from carrier-shifted gene embeddings (residualized on the
    design, PCA fitted on training subjects), a brain table with covariate and site effects, and a label.

    With `effect` > 0 the first brain features and the label depend on carriers of the first two genes; at 0
    both are unrelated to the genes. Held-out subjects come from other sites than training ones (folds are
    grouped by site). Returns the fold and the carrier indicators (subjects × genes, training rows first).
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_heldout
    site = np.concatenate([rng.integers(0, n_sites, n_train), rng.integers(n_sites, n_sites + 2, n_heldout)])
    age = rng.normal(55, 9, n)
    sex = rng.integers(0, 2, n).astype(float)
    design = np.column_stack([np.ones(n), age, sex])
    carriers = (rng.random((n, n_genes)) < 0.2).astype(float)
    directions = rng.standard_normal((n_genes, hidden))
    embeddings = np.hstack([carriers[:, [g]] * directions[g] + 0.5 * rng.standard_normal((n, hidden))
                            for g in range(n_genes)]) + np.outer(age - 55, rng.normal(0, 0.05, n_genes * hidden))
    train = slice(0, n_train)
    coefficients = np.linalg.lstsq(design[train], embeddings[train], rcond=None)[0]
    residual = embeddings - design @ coefficients
    pca = PCA(n_components=n_pcs).fit(residual[train])
    genes = pca.transform(residual).astype(np.float32)
    covariates = np.column_stack([age, sex])
    ids = [f"S{i:04d}" for i in range(n)]
    if effect > 0:
        brain = planted_brain_table(ids, carriers[:, :2], n_brain, 3, effect, covariates, seed=seed)
        liability = carriers[:, :2].sum(axis=1) * 1.5 + rng.standard_normal(n)
    else:
        brain = null_brain_table(ids, n_brain, covariates, seed=seed)
        liability = 0.05 * (age - 55) + rng.standard_normal(n)
    # Sites shift every feature (not in the design: the permutations keep each subject in its site).
    site_shifts = site_effect * rng.standard_normal((n_sites + 2, n_brain))
    values = brain.drop(columns="subject_id").to_numpy() + site_shifts[site]
    labels = np.where(liability > np.median(liability), "case", "control") if label == "binary" else liability
    fold = FoldData(
        fold=0, train_ids=np.array(ids[:n_train]), heldout_ids=np.array(ids[n_train:]),
        genes_train=genes[train], genes_heldout=genes[n_train:],
        design_train=design[train], design_heldout=design[n_train:],
        brain_train=values[train], brain_heldout=values[n_train:],
        blocks=exchangeability_blocks(site[train]),
        label_train=labels[train], label_heldout=labels[n_train:],
        brain_features=list(brain.columns[1:]),
    )
    return fold, carriers


def reference_null(data: FoldData, settings: AlignmentSettings, perm: np.ndarray) -> dict[str, np.ndarray]:
    """The same statistics for one permutation, refitted step by step with the libraries on permuted data:
    Freedman–Lane brain data, OLS, standardization, PCA, cca-zoo grid search and ridge CCA, RidgeCV."""
    design, brain = data.design_train, data.brain_train
    ols = LinearRegression(fit_intercept=False).fit(design, brain)
    permuted = ols.predict(design) + (brain - ols.predict(design))[perm]
    refit = LinearRegression(fit_intercept=False).fit(design, permuted)
    residuals = permuted - refit.predict(design)
    heldout_residuals = data.brain_heldout - refit.predict(data.design_heldout)
    sd = residuals.std(axis=0, ddof=1)
    pca = PCA(n_components=settings.n_brain_components).fit(residuals / sd)
    brain_train, brain_heldout = pca.transform(residuals / sd), pca.transform(heldout_residuals / sd)
    genes, genes_heldout = data.genes_train.astype(float), data.genes_heldout.astype(float)
    gene_scale = np.sqrt(np.mean(genes.var(axis=0, ddof=1)))
    brain_scale = np.sqrt(np.mean(brain_train.var(axis=0, ddof=1)))
    splits = list(KFold(settings.inner_splits, shuffle=True, random_state=settings.seed).split(genes))
    search = GridSearchCV(
        RidgeCCA(n_components=settings.n_canonical_components, shrinkage=[0.0, settings.brain_shrinkage]),
        param_grid={"shrinkage__0": list(settings.gene_shrinkages)}, cv=splits,
    ).fit([genes / gene_scale, brain_train / brain_scale])
    variates = search.best_estimator_.transform([genes_heldout / gene_scale, brain_heldout / brain_scale])
    heldout_r = [np.corrcoef(variates[0][:, j], variates[1][:, j])[0, 1] for j in range(variates[0].shape[1])]
    result = {"heldout_r": np.array(heldout_r), "gene_shrinkage": search.best_params_["shrinkage__0"]}
    label = np.asarray(data.label_train)[perm]
    if label.dtype.kind in "fi":
        model = RidgeCV(alphas=settings.ridge_alphas).fit(genes / gene_scale, label)
        result["label"] = r2_score(data.label_heldout, model.predict(genes_heldout / gene_scale))
    else:
        model = RidgeClassifierCV(alphas=settings.ridge_alphas).fit(genes / gene_scale, label)
        positive = model.classes_[1]
        result["label"] = roc_auc_score(np.asarray(data.label_heldout) == positive,
                                        model.decision_function(genes_heldout / gene_scale))
    pcs = RidgeCV(alphas=settings.ridge_alphas, alpha_per_target=True).fit(genes / gene_scale, brain_train)
    result["brain_pc_r2"] = r2_score(brain_heldout, pcs.predict(genes_heldout / gene_scale),
                                     multioutput="raw_values")
    return result


@pytest.mark.parametrize("label", ["binary", "continuous"])
def test_batched_null_equals_a_plain_refit_on_each_permuted_dataset(label):
    data, _ = synthetic_cohort(3, effect=0.4, label=label)
    settings = replace(SMALL, predict_brain_pcs=True)
    perms = next(block_permutations(data.blocks, 4, seed=11))
    perms = np.vstack([np.arange(len(data.train_ids)), perms])  # the identity is the observed analysis
    null = permutation_null(data, settings, perms)
    for m, perm in enumerate(perms):
        expected = reference_null(data, settings, perm)
        np.testing.assert_allclose(null["heldout_r"][m], expected["heldout_r"], atol=1e-9)
        assert null["gene_shrinkage"][m] == expected["gene_shrinkage"]
        np.testing.assert_allclose(null["label"][m], expected["label"], atol=1e-9)
        np.testing.assert_allclose(null["brain_pc_r2"][m], expected["brain_pc_r2"], atol=1e-9)
    observed = align_fold(data, replace(settings, n_permutations=0))
    np.testing.assert_allclose(observed.heldout_r, null["heldout_r"][0], atol=1e-9)
    assert observed.gene_shrinkage == null["gene_shrinkage"][0]
    label_value = observed.prediction.set_index("target")["value"]["label"]
    np.testing.assert_allclose(label_value, null["label"][0], atol=1e-12)


def test_permutations_stay_in_their_blocks_and_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(0)
    site = rng.choice(["A", "B", "C"], 200)
    batch = np.where(rng.random(200) < 0.5, "b1", "b2")
    blocks = exchangeability_blocks(site, batch)
    assert len(np.unique(blocks)) == 6
    whole = np.vstack(list(block_permutations(blocks, 300, seed=5, chunk=300)))
    pieces = np.vstack(list(block_permutations(blocks, 300, seed=5, chunk=7)))
    np.testing.assert_array_equal(whole, pieces)
    assert whole.shape == (300, 200)
    assert (blocks[whole] == blocks).all()
    assert (np.sort(whole, axis=1) == np.arange(200)).all()  # each row is a permutation
    assert (whole != np.arange(200)).any(axis=1).all()
    # Every subject reaches every position of its block about equally often.
    first = np.flatnonzero(blocks == blocks[0])
    counts = np.array([np.sum(whole[:, first[0]] == s) for s in first])
    assert counts.sum() == 300 and counts.max() < 300 / len(first) * 3
    with pytest.raises(ValueError, match="one subject"):
        next(block_permutations(np.arange(5), 10, seed=0))


def test_p_values_count_the_observed_statistic_and_the_max_over_components():
    null = np.array([[0.1, 0.0], [0.3, 0.2], [0.05, 0.25], [0.5, 0.1]])
    observed = np.array([0.3, 0.2])
    np.testing.assert_allclose(permutation_p_values(observed, null), [(1 + 2) / 5, (1 + 2) / 5])
    # Max over components per permutation: 0.1, 0.3, 0.25, 0.5.
    np.testing.assert_allclose(max_statistic_p_values(observed, null), [(1 + 2) / 5, (1 + 3) / 5])


def test_planted_association_is_detected_and_loads_on_the_planted_features():
    data, _ = synthetic_cohort(1, n_train=300, n_heldout=100, effect=0.6)
    result = align_fold(data, SMALL)
    first = result.canonical.iloc[0]
    assert first["heldout_r"] > 0.3 and first["p_value"] < 0.05 and first["p_fwe"] < 0.05
    label = result.prediction.set_index("target").loc["label"]
    assert label["metric"] == "auc" and label["value"] > 0.7 and label["p_value"] < 0.05
    features = result.loadings[(result.loadings["view"] == "brain_feature") & (result.loadings["component"] == 1)]
    strength = features.set_index("feature")["structure_correlation"].abs()
    planted = ["idp_001", "idp_002", "idp_003"]
    assert strength[planted].mean() > 2 * strength.drop(planted).mean()
    assert result.null["heldout_r"].shape == (99, 2)


def test_no_heldout_subject_reaches_a_fitted_quantity():
    data, _ = synthetic_cohort(2, effect=0.4)
    settings = replace(SMALL, n_permutations=20, predict_brain_pcs=True)
    before = align_fold(data, settings)
    changed = 7
    genes, brain, design = data.genes_heldout.copy(), data.brain_heldout.copy(), data.design_heldout.copy()
    labels = data.label_heldout.copy()
    genes[changed] *= -3.0
    brain[changed] += 25.0
    design[changed, 1] += 30.0
    labels[changed] = "case" if labels[changed] == "control" else "control"
    after = align_fold(replace(data, genes_heldout=genes, brain_heldout=brain, design_heldout=design,
                               label_heldout=labels), settings)
    for name in ("coefficients", "scales", "components", "explained_variance"):
        np.testing.assert_array_equal(getattr(before.brain_reduction, name), getattr(after.brain_reduction, name))
    np.testing.assert_array_equal(before.gene_weights, after.gene_weights)
    np.testing.assert_array_equal(before.brain_weights, after.brain_weights)
    np.testing.assert_array_equal(before.label_coefficients, after.label_coefficients)
    assert before.gene_shrinkage == after.gene_shrinkage and before.label_alpha == after.label_alpha
    np.testing.assert_array_equal(before.null["gene_shrinkage"], after.null["gene_shrinkage"])
    pd.testing.assert_frame_equal(before.loadings, after.loadings)
    scores = [c for c in before.heldout if c.startswith(("gene_cv", "brain_cv", "label_prediction"))]
    others = np.arange(len(data.heldout_ids)) != changed
    np.testing.assert_allclose(before.heldout.loc[others, scores].to_numpy(),
                               after.heldout.loc[others, scores].to_numpy(), rtol=0, atol=1e-12)
    assert (np.abs(before.heldout.loc[changed, scores].to_numpy()
                   - after.heldout.loc[changed, scores].to_numpy()) > 1e-6).all()


def test_brain_reduction_matches_ols_and_pca():
    data, _ = synthetic_cohort(4)
    settings = replace(SMALL, n_brain_components=3, n_permutations=0)
    reduction = align_fold(data, settings).brain_reduction
    ols = LinearRegression(fit_intercept=False).fit(data.design_train, data.brain_train)
    residuals = data.brain_train - ols.predict(data.design_train)
    np.testing.assert_allclose(reduction.coefficients, ols.coef_.T, rtol=1e-8)
    sd = residuals.std(axis=0, ddof=1)
    pca = PCA(n_components=3).fit(residuals / sd)
    np.testing.assert_allclose(np.abs(reduction.components), np.abs(pca.components_.T), atol=1e-10)
    np.testing.assert_allclose(reduction.explained_variance, pca.explained_variance_, rtol=1e-10)
    heldout = reduction.transform(data.brain_heldout, data.design_heldout)
    expected = (data.brain_heldout - ols.predict(data.design_heldout)) / sd @ reduction.components
    np.testing.assert_allclose(heldout, expected, atol=1e-10)
    no_intercept = replace(data, design_train=data.design_train[:, 1:], design_heldout=data.design_heldout[:, 1:])
    with pytest.raises(ValueError, match="intercept"):
        align_fold(no_intercept, settings)


def test_leave_one_gene_out_drops_the_planted_genes_most():
    data, carriers = synthetic_cohort(1, n_train=300, n_heldout=100, effect=0.6)
    settings = replace(SMALL, n_permutations=30)
    full = align_fold(data, settings)
    n_train = len(data.train_ids)
    genes = ["G1", "G2", "G3", "G4"]

    def gene_pcs_without(gene: str) -> tuple[np.ndarray, np.ndarray]:
        # The gene PCs rebuilt from a cohort without that gene's carriers' signal: its carriers zeroed.
        kept = carriers.copy()
        kept[:, genes.index(gene)] = 0
        rebuilt, _ = synthetic_cohort_from(kept)
        return rebuilt[:n_train], rebuilt[n_train:]

    def synthetic_cohort_from(kept: np.ndarray) -> tuple[np.ndarray, None]:
        rng = np.random.default_rng(99)
        embedding = np.hstack([kept[:, [g]] * rng.standard_normal(6) + 0.3 * rng.standard_normal((len(kept), 6))
                               for g in range(kept.shape[1])])
        pca = PCA(n_components=8).fit(embedding[:n_train])
        return pca.transform(embedding), None

    progress = []
    table = attribute_genes(data, genes, gene_pcs_without, full, n_permutations=10,
                            progress=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (4, 4)
    assert list(table["gene"]) == genes
    drops = table.set_index("gene")["heldout_r1_without"]
    assert drops[["G1", "G2"]].max() < drops[["G3", "G4"]].min()
    assert table["p_delta_r1"].between(1 / 11, 1).all() and table["p_value_without"].notna().all()
    np.testing.assert_allclose(table["delta_r1"], table["heldout_r1"] - table["heldout_r1_without"])


def test_tables_plots_and_encoder_comparison():
    results = []
    for fold in range(2):
        data, _ = synthetic_cohort(10 + fold, effect=0.5)
        results.append(align_fold(replace(data, fold=fold), replace(SMALL, n_permutations=19)))
    tables = alignment_tables(results)
    assert set(tables) == {"canonical_correlations", "prediction", "null_distributions", "canonical_loadings",
                           "heldout_scores"}
    assert len(tables["canonical_correlations"]) == 4
    nulls = tables["null_distributions"]
    assert len(nulls[(nulls["statistic"] == "heldout_r")]) == 2 * 19 * 2
    assert len(nulls[(nulls["statistic"] == "label")]) == 2 * 19
    assert tables["heldout_scores"].groupby("fold").size().tolist() == [50, 50]
    assert not tables["heldout_scores"].duplicated(["fold", "subject_id"]).any()
    summary = summarize_encoders({"dnabert2": tables, "caduceus": alignment_tables(results[:1])})
    assert list(summary["encoder"]) == ["dnabert2", "dnabert2", "caduceus"]
    assert summary["heldout_r1"].tolist() == [r.heldout_r[0] for r in (*results, results[0])]
    assert summary["label_metric"].notna().all()
    for png in (null_distribution_png(results), fold_bars_png(results), encoder_comparison_png(summary)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_progress_reports_every_chunk_up_to_the_total():
    data, _ = synthetic_cohort(5)
    calls = []
    align_fold(data, replace(SMALL, n_permutations=50, memory_bytes=1), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (50, 50) and len(calls) == 50 and all(t == 50 for _, t in calls)


def test_fold_inputs_are_checked_before_anything_is_fitted():
    data, _ = synthetic_cohort(6)
    with pytest.raises(ValueError, match="label_heldout must hold one non-missing label per subject"):
        replace(data, label_heldout=data.label_heldout[:-1])
    with pytest.raises(ValueError, match="brain_heldout holds a non-finite value"):
        replace(data, brain_heldout=np.where(np.eye(*data.brain_heldout.shape) > 0, np.nan, data.brain_heldout))
    with pytest.raises(ValueError, match="blocks has"):
        replace(data, blocks=data.blocks[:-1])
    words = np.array(["low", "mid", "high"])[np.arange(len(data.train_ids)) % 3]
    with pytest.raises(ValueError, match=r"label_kind .auto. does not fit the label.s values"):
        align_fold(replace(data, label_train=words, label_heldout=words[:len(data.heldout_ids)]), SMALL)
