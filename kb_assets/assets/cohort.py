"""The cohort half of the graph: covariates and folds (shared), and per encoder the subject matrix and the residualized
PCA per fold."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from kb_assets.assets.encoders import EncoderAssets
from kb_assets.assets.inputs import input_key, input_names
from kb_assets.assets.publishing import (
    ANNOTATION_FACTS,
    REFERENCE_FACTS,
    arrow_table,
    gene_chromosomes,
    input_facts,
    png_markdown,
    publish,
    report,
    upstream_facts,
    written_shapes,
)
from kb_assets.encoders.chromosome import DATASETS, encoder_dataset
from kb_assets.errors import InputError
from kb_assets.genome import vcf_samples
from kb_assets.resources import WarehouseResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import Recipe
from kb_assets.stats import (
    FactoredSubjectMatrix,
    FoldFit,
    ResidualizedPCA,
    assign_folds,
    intersect_subjects,
    load_covariates,
    pc_scatter_png,
    scree_plot_png,
)
from kb_assets.stats.covariates import (
    CATEGORICAL,
    covariate_coder,
    covariate_names,
    left_out_subjects,
    unfittable_folds,
)
from kb_assets.stats.gene_blocks import (
    ChromosomeVectors,
    analysis_subjects,
    assemble_gene_blocks,
    gene_block_tables,
    read_gene_blocks,
    shared_settings,
)
from kb_assets.stats.projection import FOLD_SCORES_SCHEMA, fit_folds
from kb_assets.stats.subject_tables import LEFT_OUT_SCHEMA
from kb_assets.storage import Warehouse, content_version, to_matrix, view_name

CODE_VERSION = "1"
SUBJECT_MATRIX_CODE_VERSION = "2"  # 2: reads cv_folds to refuse exclusions that leave the PCA unfittable
COVARIATES_CODE_VERSION = "2"  # 2: writes covariates/left_out
GROUP = "cohort"
# Facts that must agree across every gene_embeddings partition before their vectors share one matrix.
EMBEDDING_SETTINGS = ("model_sha256", "tokenizer_version", "rc_mode", "pooling_strategy", "region_to_gene",
                      "tile_bp", "tile_context_bp", "window_tokens", "window_stride", "dtype", "device_kind",
                      "haplotype_mode", "reference_version", "annotation_version")


def read_covariates(warehouse: Warehouse) -> pd.DataFrame:
    """The covariates table as the covariates asset wrote it, categoricals restored (levels sorted)."""
    frame = warehouse.read_table("covariates").to_pandas()
    for name in CATEGORICAL:
        if name in frame:
            frame[name] = pd.Categorical(frame[name], categories=sorted(frame[name].unique()))
    return frame


def _embedding_settings(warehouse: Warehouse, chromosomes: list[str], encoder: EncoderAssets) -> dict:
    """The settings every gene_embeddings partition was made with (read from its own files); refuses a mix."""
    datasets = [encoder.dataset(dataset) for dataset in DATASETS]
    files = {chrom: warehouse.partition_file(datasets[0], chrom) for chrom in chromosomes}
    facts = {chrom: {dataset: warehouse.read_facts(dataset, chrom) for dataset in datasets}
             for chrom in chromosomes}
    newest = max(chromosomes, key=lambda chrom: files[chrom].stat().st_mtime_ns)
    return shared_settings(facts, EMBEDDING_SETTINGS, newest,
                           str(warehouse.dataset_dir(encoder.dataset("gene_embeddings"))))


def read_factored_subject_matrix(store: Warehouse, encoder_name: str = "") -> tuple[list[str], list]:
    """(subject ids, per gene its GeneBlock) of an encoder's subject matrix ("" the recipe's primary encoder) as
    subject_matrix stored it."""
    dataset = encoder_dataset(encoder_name, "subject_matrix")
    subjects = store.read_table(dataset).column("subject_id").to_pylist()
    vectors = store.read_table(f"{dataset}/vectors")
    blocks = read_gene_blocks(store.read_table(f"{dataset}/genes").to_pandas(),
                              vectors.drop_columns(["vector"]).to_pandas(), to_matrix(vectors.column("vector")),
                              store.read_table(f"{dataset}/assignments").to_pandas())
    return subjects, blocks


def read_subject_matrix(store: Warehouse, genes_to_subject: str, encoder_name: str = ""
                        ) -> tuple[list[str], FactoredSubjectMatrix | np.ndarray]:
    """The subject matrix as subject_matrix stored it: factored (concat), or its N × H mean or max."""
    subjects, blocks = read_factored_subject_matrix(store, encoder_name)
    matrix = FactoredSubjectMatrix(len(subjects), blocks,
                                   source=str(store.dataset_dir(encoder_dataset(encoder_name, "subject_matrix"))))
    return subjects, matrix if genes_to_subject == "concat" else matrix.genes_to_subject(genes_to_subject)


def _refuse_unfittable_exclusions(settings: Recipe, cohort: pd.DataFrame, subjects: pd.Index, folds: pd.DataFrame,
                                  excluded_by_chromosome: dict[str, int]) -> None:
    """Stop before the subject matrix is written when missing_genotypes: exclude_subject leaves subjects the folds
    and the PCA cannot use: on whole-exome data nearly every subject has a missing call somewhere."""
    remaining = cohort.set_index("subject_id").loc[subjects].reset_index()
    reasons = unfittable_folds(remaining, folds, settings.pca.order == "residualize_then_pca")
    if reasons:
        by_chromosome = ", ".join(f"{chrom} {n}" for chrom, n in excluded_by_chromosome.items())
        raise InputError(
            settings.inputs.vcf, "haplotypes.missing_genotypes: exclude_subject",
            f"{len(cohort) - len(subjects)} of {len(cohort)} subjects were excluded for a missing genotype call "
            f"(by chromosome: {by_chromosome}), and the {len(subjects)} left cannot fill the folds and fit the "
            f"PCA ({'; '.join(reasons[:5])}{'; …' if len(reasons) > 5 else ''})",
            "set haplotypes.missing_genotypes: ref (a missing call reads as the reference allele), or filter or "
            "impute the VCF's missing calls",
        )


def _chromosome_vectors(store: Warehouse, chrom: str, encoder: EncoderAssets) -> ChromosomeVectors:
    table = store.read_partition(encoder.dataset("gene_embeddings/vectors"), chrom)
    return ChromosomeVectors(
        chrom=chrom,
        vectors=table.drop_columns(["vector"]).to_pandas(),
        matrix=to_matrix(table.column("vector")),
        assignments=store.read_partition(encoder.dataset("gene_embeddings/assignments"), chrom).to_pandas(),
        subjects=store.read_partition(encoder.dataset("gene_embeddings/subjects"), chrom).to_pandas(),
    )


@dataclass(frozen=True)
class _SavedFold:
    """What the PCA asset keeps of a fold once its model is saved and its scores written."""

    row: dict  # the fold table's row: the fit's summary and the saved model's path
    explained_variance_ratio: np.ndarray
    train_pcs: np.ndarray  # the training subjects' first two scores, for the scatter plot
    train_rows: np.ndarray


def _saved_fold_scores(fits: Iterable[FoldFit], subjects: list[str], store: Warehouse, dataset: str,
                       saved: list[_SavedFold], log: dg.DagsterLogManager) -> Iterator[pa.RecordBatch]:
    """Each fold's score batches, after saving its model under `dataset`/models and appending what is kept of it
    to `saved`. Folds are fitted as the batches are read, so one fold's scores are in memory at a time."""
    for fit in fits:
        target = store.dataset_dir(dataset) / "models" / f"fold-{fit.fold}.npz"
        with store.staged(target) as temporary:
            fit.save(temporary)
        summary = fit.summary()
        saved.append(_SavedFold({**summary, "model": str(target)}, fit.model.explained_variance_ratio_,
                               fit.scores[fit.train_rows, :2], fit.train_rows))
        log.info(f"fold {fit.fold}: {fit.n_components} components ({summary['n_components_reason']}), "
                 f"{len(fit.train_rows)} training / {len(fit.heldout_rows)} held-out subjects, "
                 f"{summary['captured_variance_vs_exact']:.5f} of the exact captured variance")
        yield from fit.record_batches(subjects)


def build_cohort_assets(recipe: Recipe, encoders: list[EncoderAssets]) -> list:
    """covariates and cv_folds, shared by every encoder; each encoder's subject_matrix and subject_embeddings_pca."""
    shared = _shared_cohort_assets(recipe)
    return [*shared, *(asset for encoder in encoders for asset in _encoder_cohort_assets(recipe, encoder))]


def _shared_cohort_assets(recipe: Recipe) -> list:
    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=f"{COVARIATES_CODE_VERSION}-{recipe.fingerprint('covariates')}",
        deps=[input_key(name) for name in ("covariates", "vcf") if name in input_names(recipe)], kinds={"parquet"})
    def covariates(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """The validated covariates (age, sex, ancestry PCs, batch, site, label) of the analysis set: the
        subjects in both the covariates table and the VCF; and every subject left out, with why (left_out)."""
        settings = recipe.checked()
        store = warehouse.get()
        if settings.inputs.covariates is None:
            raise InputError(settings.source, "inputs.covariates", "the recipe names no covariates table",
                             "add inputs.covariates (CSV, TSV or parquet) to the recipe")
        table = load_covariates(settings.inputs.covariates, settings.covariates.columns, settings.covariates.missing)
        intersection = {}
        if settings.inputs.vcf is not None:
            table, intersection = intersect_subjects(table, vcf_samples(settings.inputs.vcf))
        left_out = left_out_subjects(table.dropped, intersection)
        return publish(
            context, store, settings,
            {"covariates": arrow_table(table.frame),
             "covariates/left_out": pa.Table.from_pandas(left_out, LEFT_OUT_SCHEMA, preserve_index=False)},
            facts={"covariates": table.covariate_names, "missing_policy": settings.covariates.missing},
            metadata={
                "n_subjects": len(table.frame),
                "dropped_by_reason": dg.MetadataValue.json({reason: len(ids) for reason, ids in table.dropped.items()}),
                **{f"intersection/{k}": v for k, v in intersection.items() if not isinstance(v, list)},
                # Ids by the thousand would bloat every event: a sample here, the full list in the catalog.
                "left_out_first_20": dg.MetadataValue.json(left_out.head(20).to_dict("records")),
                "left_out_table": view_name("covariates/left_out"),
            },
            inputs=input_facts(store, covariates=settings.inputs.covariates, vcf=settings.inputs.vcf),
        )

    @dg.asset(group_name=GROUP, code_version=f"{CODE_VERSION}-{recipe.fingerprint('folds')}", deps=[covariates],
              kinds={"parquet"}, automation_condition=after_upstream_data_changes())
    def cv_folds(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Cross-validation folds, one per subject: StratifiedGroupKFold grouped by site and stratified by label
        when both exist (plain KFold otherwise), so every downstream analysis reuses the same split."""
        settings = recipe.checked()
        store = warehouse.get()
        frame = read_covariates(store)
        folds = assign_folds(
            frame, settings.folds.k, settings.folds.seed,
            group="site" if "site" in frame else None, stratify="label" if "label" in frame else None,
            source=settings.inputs.covariates,
        )
        sizes = folds.groupby("fold").size()
        summary = ["| fold | subjects | share of label=1 |", "|---:|---:|---:|"]
        for fold, group in folds.groupby("fold"):
            share = (group["stratum"].astype(str) == "1").mean() if folds["stratum"].notna().any() else float("nan")
            summary.append(f"| {fold} | {len(group)} | {share:.3f} |")
        return publish(
            context, store, settings, {"cv_folds": arrow_table(folds)},
            facts={"fold_scheme": folds.attrs["scheme"], "k": settings.folds.k, "seed": settings.folds.seed},
            metadata={"fold_sizes": [int(n) for n in sizes], "folds": dg.MetadataValue.md("\n".join(summary))},
        )

    return [covariates, cv_folds]


def _encoder_cohort_assets(recipe: Recipe, encoder: EncoderAssets) -> list:
    matrix_dataset, pca_dataset = encoder.dataset("subject_matrix"), encoder.dataset("subject_embeddings_pca")

    @dg.asset(
        key=encoder.key("subject_matrix"), group_name=encoder.group(GROUP),
        code_version=f"{SUBJECT_MATRIX_CODE_VERSION}-{recipe.fingerprint('aggregation')}",
        deps=[encoder.key("gene_embeddings"), "gene_set", "covariates", "cv_folds"], kinds={"parquet"},
        automation_condition=after_upstream_data_changes(),
    )
    def subject_matrix(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """Subjects × (genes·H) in factored form: the analysis subjects (rows), and per gene of the gene set (in
        manifest order) its distinct vectors and the rows that carry a non-reference one. Row i is the
        concatenation of its genes' vectors (or their mean or max, per the recipe); the dense matrix is never
        formed whole or stored. Subjects excluded for a missing call (haplotypes.missing_genotypes: exclude_subject)
        are counted; too many for the folds and the PCA stop the run here."""
        settings = recipe.checked()
        store = warehouse.get()
        genes = store.read_table("gene_set").to_pandas().sort_values("gene_order")
        chromosomes = gene_chromosomes(store, settings, [encoder.dataset("gene_embeddings/vectors")])
        embedding_settings = _embedding_settings(store, chromosomes, encoder)
        partitions = [_chromosome_vectors(store, chrom, encoder) for chrom in chromosomes]
        embedded = set().union(*(set(p.vectors["gene_id"]) for p in partitions)) if partitions else set()
        genes = genes[genes["gene_id"].isin(embedded)]
        cohort = read_covariates(store)
        subjects, without_every_chromosome = analysis_subjects(cohort["subject_id"], (p.subjects for p in partitions))
        # A subject absent from a partition's kept subjects was excluded there for a missing call.
        excluded_by_chromosome = {p.chrom: int((~cohort["subject_id"].isin(p.subjects["subject_id"])).sum())
                                  for p in partitions}
        excluding = settings.haplotypes.missing_genotypes == "exclude_subject"
        if excluding and without_every_chromosome:
            _refuse_unfittable_exclusions(settings, cohort, subjects, store.read_table("cv_folds").to_pandas(),
                                          excluded_by_chromosome)
            context.log.warning(f"{without_every_chromosome} of {len(cohort)} subjects excluded for a missing "
                                "genotype call (haplotypes.missing_genotypes: exclude_subject)")
        if subjects.empty:
            raise InputError(store.dataset_dir(encoder.dataset("gene_embeddings")), None,
                             "no covariates subject has gene vectors on every chromosome",
                             "check that the VCF and covariates name the same subjects")
        blocks, gene_table = assemble_gene_blocks(subjects, genes, partitions,
                                                  str(store.dataset_dir(encoder.dataset("gene_embeddings"))))
        tables = gene_block_tables(matrix_dataset, subjects, gene_table, blocks)
        hidden = blocks[0].vectors.shape[1]
        mode = settings.aggregation.genes_to_subject
        width = len(blocks) * hidden if mode == "concat" else hidden
        return publish(
            context, store, settings, tables,
            facts={
                "encoder": encoder.label,
                **embedding_settings,
                "genes_to_subject": mode,
                "genes": gene_table["gene_name"].tolist(),
                **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS),
            },
            metadata={
                "shape": [len(subjects), width],
                "stored_vectors": tables[f"{matrix_dataset}/vectors"].num_rows,
                "stored_assignments": tables[f"{matrix_dataset}/assignments"].num_rows,
                "dense_size_gb": round(len(subjects) * width * 4 / 1e9, 3),
                "subjects_without_every_chromosome": without_every_chromosome,
                **({"excluded_for_missing_genotypes": without_every_chromosome,
                    "excluded_by_chromosome": dg.MetadataValue.json(excluded_by_chromosome),
                    # A sample: the subjects table of subject_haplotypes flags every one, per chromosome.
                    "excluded_first_20": cohort.loc[~cohort["subject_id"].isin(subjects), "subject_id"].head(20)
                    .tolist(),
                    "excluded_subjects_table": view_name("subject_haplotypes/subjects")} if excluding else {}),
                "genes_without_regions": sorted(set(store.read_table("gene_set").to_pandas()["gene_name"])
                                                - set(gene_table["gene_name"])),
            },
        )

    @dg.asset(
        key=encoder.key("subject_embeddings_pca"), group_name=encoder.group(GROUP),
        code_version=f"{CODE_VERSION}-{recipe.fingerprint('pca', 'folds', 'covariates')}",
        deps=[subject_matrix, "cv_folds", "covariates"], kinds={"numpy", "parquet"},
        automation_condition=after_upstream_data_changes(),
    )
    def subject_embeddings_pca(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Per fold, fitted on the training subjects only: residualize on age, sex, ancestry PCs and batch (OLS,
        categoricals effect-coded) → covariance PCA (centered; standardized with pca.scale) through the factored
        subject matrix, or PCA then residualize; held-out subjects projected with the training fit. Rows
        (fold, subject_id, split, n_components, embedding) — each fold keeps its own number of components, so no
        NULL stands for a missing one — and each fold's fitted model with its coder (.npz)."""
        settings = recipe.checked()
        store = warehouse.get()
        subjects, matrix = read_subject_matrix(store, settings.aggregation.genes_to_subject, encoder.name)
        frame = read_covariates(store).set_index("subject_id").loc[subjects].reset_index()
        folds = store.read_table("cv_folds").to_pandas()
        folds = folds[folds["subject_id"].isin(set(subjects))]
        template = ResidualizedPCA(settings.pca.n_components, settings.pca.order, settings.pca.scale,
                                   random_state=settings.folds.seed)
        saved: list[_SavedFold] = []
        scores = _saved_fold_scores(fit_folds(matrix, frame, folds, covariate_coder(frame), template), subjects,
                                    store, pca_dataset, saved, context.log)
        facts = {
            "recipe_id": settings.recipe_id,
            "n_components_requested": settings.pca.n_components,
            "order": settings.pca.order,
            "scale": settings.pca.scale,
            "covariates": covariate_names(frame.columns),
            "coding": "effect (sum-to-zero) coding of sex and batch over the levels of each training fold",
            "fit_on": f"training subjects of each fold ({settings.folds.k - 1} of {settings.folds.k} folds); "
                      "held-out subjects projected with that fit",
            **store.read_facts(matrix_dataset),
        }
        facts.pop("write_id", None)
        # The fold models, the scores and the fold table replace the previous ones as one set, or not at all.
        with store.together():
            path = store.write_stream(pca_dataset, FOLD_SCORES_SCHEMA, scores, facts)
            fold_rows = [fold.row for fold in saved]
            folds_table = pa.Table.from_pylist([{k: (json.dumps(v) if isinstance(v, dict) else v)
                                                  for k, v in row.items()} for row in fold_rows])
            paths, _, _ = store.write_outputs({f"{pca_dataset}/folds": folds_table}, None, facts)
        store.register_views([pca_dataset, f"{pca_dataset}/folds"])
        kept = {row["fold"]: row["n_components"] for row in fold_rows}
        n_common = min(kept.values())
        mean_ratio = np.mean([fold.explained_variance_ratio[:n_common] for fold in saved], axis=0)
        written = {pca_dataset: path, **paths}
        return report(
            written_shapes(written), written, content_version(*written.values()), facts,
            metadata={
                "n_components_per_fold": dg.MetadataValue.json(kept),
                "n_components_reason": dg.MetadataValue.json({row["fold"]: row["n_components_reason"]
                                                              for row in fold_rows}),
                "captured_variance_vs_exact": round(min(row["captured_variance_vs_exact"] for row in fold_rows), 6),
                "unseen_levels": dg.MetadataValue.json({row["fold"]: row["unseen_levels"] for row in fold_rows
                                                        if row["unseen_levels"]}),
                "explained_variance_first_10": [round(float(r), 6) for r in mean_ratio[:10]],
                "explained_variance_total": round(float(mean_ratio.sum()), 6),
                "folds": dg.MetadataValue.md(folds_table.select(
                    ["fold", "n_train", "n_heldout", "n_components", "n_components_reason",
                     "captured_variance_vs_exact", "heldout_with_unseen_levels"]).to_pandas().to_markdown(
                    index=False)),
                "scree_plot": png_markdown(scree_plot_png(mean_ratio), "scree plot (mean over folds)"),
                "pc_scatter": png_markdown(pc_scatter_png(saved[0].train_pcs,
                                                          frame["batch"].astype(str).to_numpy()[saved[0].train_rows]),
                                           "fold 0 training subjects on pc_1 and pc_2, coloured by batch")
                if n_common >= 2 else "fewer than two components",
            },
        )

    return [subject_matrix, subject_embeddings_pca]
