"""The evaluation stage's domain side (`evaluate_gene_brain`): per fold of subject_embeddings_pca, for the subjects
that have brain data, the gene PCs it wrote, the covariate designs coded by that fold's own coder (the gene side's
coding), the brain features, the exchangeability blocks and the label, put in the shape kb_assets.stats.alignment
takes; then each fold's alignment, leave-one-gene-out attribution and gene loadings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kb_assets.errors import InputError
from kb_assets.settings import CovariateColumns
from kb_assets.stats.alignment import (
    AlignmentSettings,
    FoldAlignment,
    FoldData,
    align_fold,
    alignment_tables,
    attribute_genes,
    label_kind,
)
from kb_assets.stats.brain import BrainTable
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.permutation import exchangeability_blocks
from kb_assets.stats.projection import ResidualizedPCA
from kb_assets.stats.subject_matrix import FactoredSubjectMatrix, GeneBlock

FoldProgress = Callable[[int, int, int], None]  # (fold, permutations done, permutations in all)


@dataclass(frozen=True)
class InputFiles:
    """What the stage's errors name: the user's covariates and brain files, and the covariates' columns as the
    recipe maps them."""

    covariates: Path
    brain: Path
    columns: CovariateColumns


@dataclass(frozen=True)
class GeneBrainEvaluation:
    """Every fold's alignment, and the tables the stage writes."""

    results: list[FoldAlignment]
    tables: dict[str, pd.DataFrame]  # alignment_tables' and attribution, gene_loadings
    label: str | None  # the covariates' label column, when it was predicted


def evaluate_gene_brain(scores: pd.DataFrame, models: pd.DataFrame, covariates: pd.DataFrame, brain: BrainTable,
                        genes: pd.DataFrame, subjects: list[str], blocks: list[GeneBlock],
                        settings: AlignmentSettings, attribution_permutations: int, files: InputFiles,
                        progress: FoldProgress | None = None) -> GeneBrainEvaluation:
    """Every fold of subject_embeddings_pca (scores and its `folds` table of model paths), fitted on its training
    subjects with brain data: the alignment and prediction (`align_fold`), leave-one-gene-out attribution with
    `attribution_permutations`, and the gene loadings. `subjects` and `blocks` are the factored subject matrix the
    PCA was fitted on (concatenated genes), `genes` its gene table.

    The inputs are checked for every fold before any fitting: an InputError names the file, the column or fold,
    and the fix."""
    label = "label" if "label" in covariates else None
    _check_folds(scores, models, covariates, brain, _label_kind(covariates, brain, files) if label else None,
                 settings, files)
    subject_rows = pd.Series(np.arange(len(subjects)), index=subjects)
    results, attributions, loadings = [], [], []
    for model in folds_of(scores, models):
        data = fold_data(model, covariates, brain, label)
        result = align_fold(data, settings, None if progress is None else partial(progress, model.fold))
        results.append(result)
        attributions.append(attribute_genes(
            data, genes["gene_id"].tolist(), gene_pcs_without(blocks, len(subjects), subject_rows, covariates,
                                                              model, data),
            result, attribution_permutations))
        loadings.append(gene_loadings(model, result.gene_weights, genes, blocks[0].vectors.shape[1]))
    attribution = pd.concat(attributions, ignore_index=True).merge(
        genes[["gene_id", "gene_name"]], left_on="gene", right_on="gene_id").drop(columns=["gene"])
    tables = {**alignment_tables(results), "attribution": attribution,
              "gene_loadings": pd.concat(loadings, ignore_index=True)}
    return GeneBrainEvaluation(results, tables, label)


def _label_kind(covariates: pd.DataFrame, brain: BrainTable, files: InputFiles) -> Literal["binary", "continuous"]:
    """The label's kind (`label_kind`) over the subjects with brain data, checked before any fold is fitted."""
    labels = covariates.loc[covariates["subject_id"].isin(set(brain.subject_ids)), "label"].astype(str)
    kind = label_kind(labels.to_numpy())
    if kind is None:
        values = sorted(labels.unique())
        shown = ", ".join(f"'{v}'" for v in values[:5]) + (", …" if len(values) > 5 else "")
        raise InputError(files.covariates, f"column {files.columns.label}",
                         f"the {len(labels)} subjects with brain data have the label value(s) {shown}: the "
                         "evaluation predicts a label of two classes (AUC) or of numbers (R²)",
                         "map covariates.columns.label to a column of two classes or of numbers, or set it to null "
                         "to evaluate without a label")
    return kind


def _check_folds(scores: pd.DataFrame, models: pd.DataFrame, covariates: pd.DataFrame, brain: BrainTable,
                 kind: Literal["binary", "continuous"] | None, settings: AlignmentSettings, files: InputFiles) -> None:
    """Each fold's subjects with brain data can be evaluated: the inner splits choose the penalties on the training
    subjects and a held-out correlation needs two; the brain PCs are fitted on the residuals of the fold's
    covariate design, which need more training subjects than the design has columns; a binary label needs both
    classes among the training subjects; and permutations, when there are any, need training subjects that share
    an exchangeability block (site and batch) somewhere."""
    brain_ids = set(brain.subject_ids)
    frame = covariates.set_index("subject_id")
    needed = 2 * settings.inner_splits
    for fold, model_path in zip(models["fold"], models["model"]):
        train, heldout = _with_brain(scores[scores["fold"] == fold], brain_ids)
        if len(train) < needed or len(heldout) < 2:
            raise InputError(files.brain, f"fold {fold}",
                             f"{len(train)} training and {len(heldout)} held-out subjects of the fold have brain "
                             f"data; the evaluation needs at least {needed} and 2",
                             f"add brain features for more of the covariates' subjects (the brain table has "
                             f"{len(brain_ids)} of them)")
        columns = CovariateCoder.from_json(ResidualizedPCA.saved_coder_json(model_path)).columns_
        if len(train) <= len(columns):
            shown = ", ".join(columns[:6]) + (", …" if len(columns) > 6 else "")
            raise InputError(files.brain, f"fold {fold}",
                             f"{len(train)} training subjects of the fold have brain data, no more than the "
                             f"{len(columns)} columns of its covariate design ({shown}), so no brain PCs can be "
                             "fitted on the brain features' residuals",
                             f"add brain features for more of the covariates' subjects (the brain table has "
                             f"{len(brain_ids)} of them; each fold needs more than {len(columns)} among its "
                             "training subjects), or residualize on fewer covariates (covariates.columns.pcs)")
        if kind == "binary":
            classes = frame.loc[train["subject_id"], "label"].astype(str).unique()
            if len(classes) < 2:
                raise InputError(files.covariates, f"column {files.columns.label}, fold {fold}",
                                 f"all {len(train)} training subjects of the fold with brain data have label "
                                 f"'{classes[0]}', so the fold has no second class to learn",
                                 "add brain features for subjects of the other class, or set "
                                 "covariates.columns.label: null to evaluate without a label")
        if settings.n_permutations and np.bincount(_blocks(frame, train["subject_id"])).max() < 2:
            block_columns = " and ".join(getattr(files.columns, name) for name in ("site", "batch") if name in frame)
            raise InputError(files.covariates, f"columns {block_columns}, fold {fold}",
                             f"each of the {len(train)} training subjects of the fold with brain data is alone in "
                             "its site and batch, so no permutation within site and batch can exchange two",
                             "set evaluation.n_permutations: 0 to report held-out correlations without p-values, "
                             "or add brain features for more subjects per site and batch")


def _with_brain(scores: pd.DataFrame, brain_ids: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, held-out) rows of one fold's scores, for the subjects with brain data."""
    with_brain = scores[scores["subject_id"].isin(brain_ids)]
    return with_brain[with_brain["split"] == "train"], with_brain[with_brain["split"] == "heldout"]


def _blocks(frame: pd.DataFrame, subject_ids: pd.Series) -> np.ndarray:
    """Exchangeability blocks of the subjects (frame indexed by subject id): site, and batch within site, when
    the covariates have them."""
    levels = [frame.loc[subject_ids, name].astype(str).to_numpy() for name in ("site", "batch") if name in frame]
    return exchangeability_blocks(*levels) if levels else np.zeros(len(subject_ids), dtype=np.int64)


@dataclass(frozen=True)
class FoldModel:
    """One fold of subject_embeddings_pca: its fitted PCA and coder, and its scores."""

    fold: int
    model: ResidualizedPCA
    coder: CovariateCoder
    scores: pd.DataFrame  # subject_id, split, embedding (list of floats)

    @classmethod
    def load(cls, fold: int, model_path: str, scores: pd.DataFrame) -> FoldModel:
        return cls(fold, ResidualizedPCA.load(model_path),
                   CovariateCoder.from_json(ResidualizedPCA.saved_coder_json(model_path)),
                   scores[scores["fold"] == fold])


def fold_data(model: FoldModel, covariates: pd.DataFrame, brain: BrainTable, label: str | None) -> FoldData:
    """The fold's inputs for the subjects with brain data (training and held-out rows in the scores' order).

    Blocks: site, and batch within site, when the covariates have them (permutations stay within a block)."""
    train, heldout = _with_brain(model.scores, set(brain.subject_ids))
    frame = covariates.set_index("subject_id")
    return FoldData(
        fold=model.fold,
        train_ids=train["subject_id"].to_numpy(),
        heldout_ids=heldout["subject_id"].to_numpy(),
        genes_train=np.stack(train["embedding"].to_numpy()).astype(np.float64),
        genes_heldout=np.stack(heldout["embedding"].to_numpy()).astype(np.float64),
        design_train=model.coder.transform(frame.loc[train["subject_id"]].reset_index()),
        design_heldout=model.coder.transform(frame.loc[heldout["subject_id"]].reset_index()),
        brain_train=brain.matrix(train["subject_id"]),
        brain_heldout=brain.matrix(heldout["subject_id"]),
        blocks=_blocks(frame, train["subject_id"]),
        label_train=frame.loc[train["subject_id"], label].to_numpy() if label else None,
        label_heldout=frame.loc[heldout["subject_id"], label].to_numpy() if label else None,
        brain_features=brain.features,
    )


def gene_pcs_without(blocks: list[GeneBlock], n_rows: int, subject_rows: pd.Series, covariates: pd.DataFrame,
                     model: FoldModel, data: FoldData):
    """A function of a gene id giving the fold's gene PCs refitted without that gene's block (training and
    held-out, for `data`'s subjects): the same coder and PCA settings, fitted on the same training subjects."""
    frame = covariates.set_index("subject_id")
    all_train = model.scores.loc[model.scores["split"] == "train", "subject_id"]
    train_rows = subject_rows.loc[all_train].to_numpy()
    rows = {split: subject_rows.loc[ids].to_numpy() for split, ids in (("train", data.train_ids),
                                                                        ("heldout", data.heldout_ids))}

    def without(gene_id: str) -> tuple[np.ndarray, np.ndarray]:
        kept = [b for b in blocks if b.gene_id != gene_id]
        matrix = FactoredSubjectMatrix(n_rows, kept)
        fitted = ResidualizedPCA(**model.model.get_params()).fit(
            matrix.take_rows(train_rows), model.coder.transform(frame.loc[all_train].reset_index()),
            model.coder.columns_)
        return tuple(fitted.transform(matrix.take_rows(rows[split]),
                                      model.coder.transform(frame.loc[ids].reset_index()))
                     for split, ids in (("train", data.train_ids), ("heldout", data.heldout_ids)))

    return without


def gene_loadings(model: FoldModel, gene_weights: np.ndarray, genes: pd.DataFrame, hidden: int) -> pd.DataFrame:
    """How much each gene carries each canonical variate of the gene view: the variate's weights on the gene PCs
    mapped back to the subject-matrix features (through the PCA components) and summarized per gene block as its
    share of the squared weight."""
    feature_weights = model.model.components_.T @ gene_weights  # features × components
    per_gene = (feature_weights ** 2).reshape(len(genes), hidden, -1).sum(axis=1)
    share = per_gene / per_gene.sum(axis=0, keepdims=True)
    component, gene = np.meshgrid(np.arange(share.shape[1]), np.arange(len(genes)))
    return pd.DataFrame({"fold": model.fold, "component": component.ravel() + 1,
                         "gene_id": genes["gene_id"].to_numpy()[gene.ravel()],
                         "gene_name": genes["gene_name"].to_numpy()[gene.ravel()],
                         "weight_share": share.ravel()})


def folds_of(scores: pd.DataFrame, models: pd.DataFrame) -> Iterator[FoldModel]:
    """Every fold of subject_embeddings_pca (models: its `folds` table: fold, model path)."""
    for fold, path in zip(models["fold"], models["model"]):
        yield FoldModel.load(int(fold), str(path), scores)
