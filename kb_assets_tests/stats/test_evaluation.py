"""The evaluation stage's domain entry (evaluate_gene_brain) on a small factored cohort fitted fold by fold like
subject_embeddings_pca: every fold's tables, the label's kind read from its values, and one InputError, naming the file,
the column or fold and a fix the recipe can express, for inputs no fold can be fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kb_assets.errors import InputError
from kb_assets.settings import CovariateColumns
from kb_assets.stats.alignment import AlignmentSettings
from kb_assets.stats.brain import BrainTable
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.evaluation import InputFiles, evaluate_gene_brain
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.projection import ResidualizedPCA, fit_folds
from kb_assets_tests.stats.conftest import cohort_frame, factored_matrix

N = 120
FILES = InputFiles(covariates=Path("cov.tsv"), brain=Path("brain.tsv"),
                   columns=CovariateColumns(site="centre", label="diagnosis"))
SETTINGS = AlignmentSettings(n_brain_components=3, n_canonical_components=2, n_permutations=19)


def evaluate(tmp_path: Path, frame: pd.DataFrame, with_brain=None, settings: AlignmentSettings = SETTINGS):
    """evaluate_gene_brain on a 3-gene factored cohort, its PCA fitted per fold (k = 3, grouped by site) and
    saved as subject_embeddings_pca saves it; brain features for the subjects `with_brain` (default: all)."""
    matrix = factored_matrix(N, n_genes=3, hidden=8, seed=1)
    folds = assign_folds(frame, k=3, seed=0)
    coder = CovariateCoder(categorical=["sex", "batch"], numeric=["age", "pc1", "pc2", "pc3"])
    scores, paths = [], []
    for fit in fit_folds(matrix, frame, folds, coder, ResidualizedPCA(n_components=6)):
        scores.append(pa.Table.from_batches(list(fit.record_batches(frame["subject_id"]))).to_pandas())
        paths.append(str(fit.save(tmp_path / f"fold{fit.fold}.npz")))
    ids = frame["subject_id"] if with_brain is None else pd.Series(sorted(with_brain))
    rng = np.random.default_rng(2)
    brain = BrainTable(frame=pd.DataFrame({"subject_id": ids, **{f"idp{j}": rng.normal(size=len(ids))
                                                                 for j in range(5)}}),
                       source=tmp_path / "brain_features.parquet", features=[f"idp{j}" for j in range(5)])
    blocks = [matrix.gene_block(g) for g in range(3)]
    genes = pd.DataFrame({"gene_id": matrix.gene_ids, "gene_name": ["A", "B", "C"]})
    return evaluate_gene_brain(pd.concat(scores, ignore_index=True),
                               pd.DataFrame({"fold": range(len(paths)), "model": paths}), frame, brain, genes,
                               [str(s) for s in frame["subject_id"]], blocks, settings, min(5, settings.n_permutations),
                               FILES), folds


def test_every_fold_is_aligned_attributed_and_loaded(tmp_path):
    evaluation, _ = evaluate(tmp_path, cohort_frame(N, seed=3))
    tables = evaluation.tables
    assert set(tables) == {"canonical_correlations", "prediction", "null_distributions", "canonical_loadings",
                           "heldout_scores", "attribution", "gene_loadings"}
    assert sorted(tables["canonical_correlations"]["fold"].unique()) == [0, 1, 2]
    assert (tables["prediction"].query("target == 'label'")["metric"] == "auc").all()
    assert tables["attribution"].groupby("fold")["gene_name"].apply(list).tolist() == [["A", "B", "C"]] * 3
    assert tables["attribution"]["p_delta_r1"].between(1 / 6, 1).all()
    np.testing.assert_allclose(tables["gene_loadings"].groupby(["fold", "component"])["weight_share"].sum(), 1.0)
    assert evaluation.label == "label"


def test_a_label_of_more_than_two_numbers_is_predicted_as_a_number(tmp_path):
    frame = cohort_frame(N, seed=3)
    frame["label"] = pd.Categorical(np.array(["0", "1", "2.5"])[np.arange(N) % 3])
    evaluation, _ = evaluate(tmp_path, frame)
    assert (evaluation.tables["prediction"].query("target == 'label'")["metric"] == "r2").all()


def test_a_label_of_neither_two_classes_nor_numbers_names_the_column(tmp_path):
    frame = cohort_frame(N, seed=3)
    frame["label"] = pd.Categorical(np.array(["ASD", "ADHD", "control"])[np.arange(N) % 3])
    with pytest.raises(InputError, match=r"^cov.tsv: column diagnosis: the 120 subjects with brain data have the "
                                         r"label value\(s\) 'ADHD', 'ASD', 'control': the evaluation predicts a "
                                         r"label of two classes \(AUC\) or of numbers \(R²\)\. Fix: map "
                                         r"covariates.columns.label to a column of two classes or of numbers, or "
                                         r"set it to null"):
        evaluate(tmp_path, frame)


def test_too_few_subjects_with_brain_data_name_the_brain_table_and_fold(tmp_path):
    frame = cohort_frame(N, seed=3)
    with pytest.raises(InputError, match=r"^brain.tsv: fold \d: \d+ training and \d+ held-out subjects of the fold "
                                         r"have brain data; the evaluation needs at least 10 and 2\. Fix: add brain "
                                         r"features for more of the covariates' subjects \(the brain table has 12 "
                                         r"of them\)"):
        evaluate(tmp_path, frame, with_brain=frame["subject_id"][:12])


def test_folds_with_fewer_brain_subjects_than_design_columns_name_the_brain_table_fold_and_counts(tmp_path):
    # Eight batches make a 13-column design; five brain subjects per fold leave each fold 10 training subjects,
    # enough for the inner splits but not for brain PCs on the design's residuals.
    frame = cohort_frame(N, seed=3)
    frame["batch"] = pd.Categorical([f"b{i % 8}" for i in range(N)])
    folds = assign_folds(frame, k=3, seed=0)
    with_brain = folds.groupby("fold")["subject_id"].apply(lambda ids: list(ids[:5])).sum()
    without_p_values = AlignmentSettings(n_brain_components=3, n_canonical_components=2, n_permutations=0)
    with pytest.raises(InputError, match=r"^brain.tsv: fold 0: 10 training subjects of the fold have brain data, no "
                                         r"more than the 13 columns of its covariate design \(intercept, age, pc1, "
                                         r"pc2, pc3, sex\[F\], …\), so no brain PCs can be fitted on the brain "
                                         r"features' residuals\. Fix: add brain features for more of the "
                                         r"covariates' subjects \(the brain table has 15 of them; each fold needs "
                                         r"more than 13 among its training subjects\), or residualize on fewer "
                                         r"covariates \(covariates.columns.pcs\)$"):
        evaluate(tmp_path, frame, with_brain=with_brain, settings=without_p_values)


def test_a_fold_whose_training_subjects_hold_one_class_is_named(tmp_path):
    # Cases with brain data only among fold 0's held-out subjects: fold 0 trains on controls alone.
    frame = cohort_frame(N, seed=3)
    folds = assign_folds(frame, k=3, seed=0).set_index("subject_id")["fold"]
    label = frame.set_index("subject_id")["label"].astype(str)
    with_brain = [s for s in frame["subject_id"] if label[s] == "control" or folds[s] == 0]
    with pytest.raises(InputError, match=r"^cov.tsv: column diagnosis, fold 0: all \d+ training subjects of the "
                                         r"fold with brain data have label 'control', so the fold has no second "
                                         r"class to learn\. Fix: add brain features for subjects of the other "
                                         r"class, or set covariates.columns.label: null"):
        evaluate(tmp_path, frame, with_brain=with_brain)


def test_subjects_alone_in_their_site_and_batch_ask_for_no_permutations(tmp_path):
    frame = cohort_frame(N, seed=3)
    frame["site"] = pd.Categorical([f"site{i:03d}" for i in range(N)])
    with pytest.raises(InputError, match=r"^cov.tsv: columns centre and batch, fold 0: each of the 80 training "
                                         r"subjects of the fold with brain data is alone in its site and batch, so "
                                         r"no permutation within site and batch can exchange two\. Fix: set "
                                         r"evaluation.n_permutations: 0"):
        evaluate(tmp_path, frame)
    without_p_values = AlignmentSettings(n_brain_components=3, n_canonical_components=2, n_permutations=0)
    evaluation, _ = evaluate(tmp_path, frame, settings=without_p_values)
    assert evaluation.tables["canonical_correlations"]["p_value"].isna().all()


def test_a_fold_whose_heldout_subjects_hold_one_class_says_why_its_auc_is_undefined(tmp_path):
    # Cases with brain data outside fold 0 only: fold 0 trains on both classes and holds out controls alone.
    frame = cohort_frame(N, seed=3)
    folds = assign_folds(frame, k=3, seed=0).set_index("subject_id")["fold"]
    label = frame.set_index("subject_id")["label"].astype(str)
    with_brain = [s for s in frame["subject_id"] if label[s] == "control" or folds[s] != 0]
    evaluation, _ = evaluate(tmp_path, frame, with_brain=with_brain)
    rows = evaluation.tables["prediction"].query("target == 'label'").set_index("fold")
    n_heldout = sum(folds[s] == 0 for s in with_brain)
    assert np.isnan(rows.loc[0, "value"]) and np.isnan(rows.loc[0, "p_value"])
    assert rows.loc[0, "undefined_reason"] == (f"the fold's {n_heldout} held-out subjects with brain data all have "
                                               "label 'control', so the AUC, which compares the two classes, is "
                                               "undefined")
    assert np.isfinite(rows.loc[[1, 2], ["value", "p_value"]].to_numpy()).all()
    assert (rows.loc[[1, 2], "undefined_reason"] == "").all()
    fold0 = evaluation.tables["attribution"].query("fold == 0")
    assert fold0[["label_p_value_without", "p_delta_label_metric"]].isna().all().all()
