"""What the evaluation stage reads, put in the shape kb_assets.stats.alignment takes: per fold the gene PCs that
subject_embeddings_pca wrote, the covariate designs coded by that fold's own coder (the gene side's coding), the
brain features, the exchangeability blocks and the label — for the subjects that have brain data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kb_assets.stats.alignment import FoldData
from kb_assets.stats.brain import BrainTable
from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.permutation import exchangeability_blocks
from kb_assets.stats.projection import ResidualizedPCA
from kb_assets.stats.subject_matrix import FactoredSubjectMatrix, GeneBlock


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
    with_brain = model.scores[model.scores["subject_id"].isin(set(brain.subject_ids))]
    train, heldout = (with_brain[with_brain["split"] == split] for split in ("train", "heldout"))
    frame = covariates.set_index("subject_id")
    levels = [frame.loc[train["subject_id"], name].astype(str).to_numpy()
              for name in ("site", "batch") if name in frame]
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
        blocks=exchangeability_blocks(*levels) if levels else np.zeros(len(train), dtype=np.int64),
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
