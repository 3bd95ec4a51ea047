"""The evaluation stage (a recipe with inputs.brain): the brain feature table, and per fold the gene–brain CCA, the
label prediction and the leave-one-gene-out attribution, each with block-permutation p-values, all fitted on the
training subjects of the fold only (kb_assets.stats.alignment). The brain table is shared; each encoder of the
recipe has its own gene_brain_alignment, on the same folds and permutations, so their results compare directly."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import dagster as dg
import numpy as np
import pyarrow as pa

from kb_assets.assets.cohort import read_covariates, read_factored_subject_matrix
from kb_assets.assets.encoders import EncoderAssets
from kb_assets.assets.inputs import input_key
from kb_assets.assets.publishing import arrow_table, input_facts, png_markdown, publish
from kb_assets.resources import WarehouseResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import Recipe
from kb_assets.stats.alignment import AlignmentSettings, summarize_encoders
from kb_assets.stats.alignment_plots import (
    encoder_comparison_png,
    fold_bars_png,
    gene_loadings_png,
    null_distribution_png,
)
from kb_assets.stats.brain import (
    NO_BRAIN_ROW,
    ONLY_IN_BRAIN,
    BrainTable,
    left_out_of_evaluation,
    load_brain_table,
)
from kb_assets.stats.evaluation import InputFiles, evaluate_gene_brain
from kb_assets.stats.subject_tables import LEFT_OUT_SCHEMA
from kb_assets.storage import Warehouse, view_name

CODE_VERSION = "3"  # 2: top_genes_by_attribution as a ranked list; 3: undefined label metrics have no p-value
BRAIN_FEATURES_CODE_VERSION = "3"  # 3: writes brain_features/left_out
GROUP = "evaluation"


def read_brain(store: Warehouse) -> BrainTable:
    """The brain table as brain_features wrote it."""
    frame = store.read_table("brain_features").to_pandas()
    return BrainTable(frame=frame, source=store.table_file("brain_features"),
                      features=[c for c in frame.columns if c != "subject_id"])


def build_evaluation_assets(recipe: Recipe, encoders: list[EncoderAssets]) -> list:
    """brain_features and each encoder's gene_brain_alignment, when the recipe names a brain table."""
    if recipe.inputs.brain is None:
        return []
    assets = [_brain_features(recipe), *(_gene_brain_alignment(recipe, encoder) for encoder in encoders)]
    if len(encoders) > 1:
        assets.append(_alignment_by_encoder(recipe, encoders))
    return assets


def _brain_features(recipe: Recipe):
    settings_code = f"{BRAIN_FEATURES_CODE_VERSION}-{recipe.fingerprint('evaluation')}"

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=settings_code, deps=[input_key("brain"), "covariates"], kinds={"parquet"},
    )
    def brain_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """The validated brain feature table of the analysis subjects (those in the covariates table too); and
        every subject of either table left out, with why (left_out)."""
        settings = recipe.checked()
        options = settings.evaluation
        store = warehouse.get()
        table = load_brain_table(settings.inputs.brain, options.columns.subject_id, options.columns.features,
                                 options.missing)
        cohort = store.read_table("covariates", columns=["subject_id"]).column("subject_id").to_pylist()
        kept = table.frame[table.frame["subject_id"].isin(set(cohort))]
        left_out = left_out_of_evaluation(table, cohort)
        return publish(
            context, store, settings,
            {"brain_features": arrow_table(kept),
             "brain_features/left_out": pa.Table.from_pandas(left_out, LEFT_OUT_SCHEMA, preserve_index=False)},
            facts={"brain_features": table.features, "missing_policy": options.missing},
            metadata={"n_subjects": len(kept), "n_features": len(table.features),
                      # Each subject counted once: one dropped for a missing value is not also without brain data.
                      "only_in_brain_table": int((left_out["reason"] == ONLY_IN_BRAIN).sum()),
                      "covariates_subjects_without_brain_data": int((left_out["reason"] == NO_BRAIN_ROW).sum()),
                      "dropped_by_reason": dg.MetadataValue.json({reason: len(ids)
                                                                  for reason, ids in table.dropped.items()}),
                      # Ids by the thousand would bloat every event: a sample here, the full list in the catalog.
                      "left_out_first_20": dg.MetadataValue.json(left_out.head(20).to_dict("records")),
                      "left_out_table": view_name("brain_features/left_out")},
            inputs=input_facts(store, brain=settings.inputs.brain),
        )

    return brain_features


def _gene_brain_alignment(recipe: Recipe, encoder: EncoderAssets):
    settings_code = f"{CODE_VERSION}-{recipe.fingerprint('evaluation')}"
    pca_dataset, alignment_dataset = encoder.dataset("subject_embeddings_pca"), encoder.dataset("gene_brain_alignment")

    @dg.asset(
        key=encoder.key("gene_brain_alignment"), automation_condition=after_upstream_data_changes(),
        group_name=encoder.group(GROUP),
        code_version=f"{settings_code}-{recipe.fingerprint('pca', 'folds', 'covariates')}",
        deps=["brain_features", encoder.key("subject_embeddings_pca"), encoder.key("subject_matrix"), "covariates"],
        kinds={"parquet"},
    )
    def gene_brain_alignment(context: dg.AssetExecutionContext,
                             warehouse: WarehouseResource) -> dg.MaterializeResult:
        """Per fold, fitted on its training subjects only: brain features residualized on the covariates (the
        gene side's coding) and reduced by PCA; ridge CCA between gene PCs and brain PCs (penalty by inner CV);
        the label predicted from the gene PCs (ridge); leave-one-gene-out attribution; p-values from permutations
        of training subjects within site and batch blocks, refitting what was fitted (family-wise over components
        by the max statistic)."""
        settings = recipe.checked()
        options = settings.evaluation
        store = warehouse.get()
        covariates = read_covariates(store)
        brain = read_brain(store)
        subjects, blocks = read_factored_subject_matrix(store, encoder.name)
        evaluation = evaluate_gene_brain(
            scores=store.read_table(pca_dataset).to_pandas(),
            models=store.read_table(f"{pca_dataset}/folds", columns=["fold", "model"]).to_pandas(),
            covariates=covariates, brain=brain,
            genes=store.read_table(encoder.dataset("subject_matrix/genes")).to_pandas(),
            subjects=subjects, blocks=blocks,
            settings=AlignmentSettings(
                n_brain_components=options.n_brain_components,
                n_canonical_components=options.n_canonical_components, n_permutations=options.n_permutations,
                seed=options.seed, predict_brain_pcs=options.predict_brain_pcs),
            attribution_permutations=options.attribution_permutations,
            files=InputFiles(covariates=settings.inputs.covariates, brain=settings.inputs.brain,
                             columns=settings.covariates.columns),
            progress=lambda fold, done, total: context.log.info(f"fold {fold}: {done}/{total} permutations"),
        )
        tables, results = evaluation.tables, evaluation.results
        attribution = tables["attribution"]
        canonical = tables["canonical_correlations"]
        first = canonical[canonical["component"] == 1]
        prediction = tables["prediction"]
        label_rows = prediction[prediction["target"] == "label"]
        return publish(
            context, store, settings,
            {alignment_dataset: pa.Table.from_pandas(canonical, preserve_index=False),
             **{f"{alignment_dataset}/{name}": pa.Table.from_pandas(frame, preserve_index=False)
                for name, frame in tables.items() if name != "canonical_correlations"}},
            facts={"encoder": encoder.label, "brain_features": brain.features, "label": evaluation.label or "none",
                   "n_permutations": options.n_permutations, "permutation_seed": options.seed,
                   "blocks": [name for name in ("site", "batch") if name in covariates],
                   "n_brain_components": options.n_brain_components,
                   "n_canonical_components": options.n_canonical_components,
                   "fit_on": "training subjects of each fold; held-out subjects projected with that fit",
                   **{key: value for key, value in store.read_facts(pca_dataset).items()
                      if key in ("model_sha256", "model_id", "tokenizer_version", "rc_mode", "pooling_strategy",
                                 "covariates", "coding", "n_components_requested")}},
            metadata={
                "heldout_r1_mean": round(float(first["heldout_r"].mean()), 4),
                "heldout_r1_by_fold": [round(float(r), 4) for r in first["heldout_r"]],
                "p_value_r1_by_fold": [float(p) for p in first["p_value"]],
                **({"label_metric": str(label_rows["metric"].iloc[0]),
                    "label_metric_mean": round(float(label_rows["value"].mean()), 4),
                    "label_p_value_by_fold": [float(p) for p in label_rows["p_value"]],
                    # The mean is over the folds where the metric is defined; each other fold says why.
                    "label_metric_undefined": [f"fold {row.fold}: {row.undefined_reason}"
                                               for row in label_rows.itertuples() if row.undefined_reason]}
                   if len(label_rows) else {}),
                # A list, not a dict: Dagster stores a JSON object with its keys sorted, which loses the ranking.
                "top_genes_by_attribution": [
                    {"gene_name": gene, "mean_delta_r1": round(float(drop), 4)} for gene, drop in
                    attribution.groupby("gene_name")["delta_r1"].mean().sort_values(ascending=False).head(10).items()],
                "null_distribution": png_markdown(null_distribution_png(results),
                                                  "held-out first canonical correlation against its permutation null"),
                "folds": png_markdown(fold_bars_png(results),
                                      "held-out canonical correlations and prediction per fold"),
                "gene_loadings": png_markdown(gene_loadings_png(tables["gene_loadings"]),
                                              "share of the first canonical variate's gene weights, per gene"),
            },
        )

    return gene_brain_alignment


def _alignment_by_encoder(recipe: Recipe, encoders: list[EncoderAssets]):
    @dg.asset(
        automation_condition=after_upstream_data_changes(), group_name=GROUP, code_version=CODE_VERSION,
        deps=[encoder.key("gene_brain_alignment") for encoder in encoders], kinds={"parquet"},
        required_resource_keys={"warehouse"},
    )
    def gene_brain_alignment_by_encoder(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """The encoders' gene–brain results side by side, on the same gene set, cohort, folds and permutations: per
        encoder and fold the held-out first canonical correlation and the label metric, with their permutation
        p-values (the model card's DNABERT-2 vs Caduceus comparison)."""
        settings = recipe.checked()
        store = context.resources.warehouse.get()
        tables = {}
        for encoder in encoders:
            dataset = encoder.dataset("gene_brain_alignment")
            tables[encoder.label] = {"canonical_correlations": store.read_table(dataset).to_pandas(),
                                     "prediction": store.read_table(f"{dataset}/prediction").to_pandas()}
        summary = summarize_encoders(tables)
        means = summary.groupby("encoder", sort=False)[["heldout_r1", "label_metric"]].mean()
        return publish(
            context, store, settings, {"gene_brain_alignment_by_encoder": arrow_table(summary)},
            facts={"encoders": list(tables), "n_permutations": settings.evaluation.n_permutations,
                   "permutation_seed": settings.evaluation.seed,
                   "made_with": {encoder.label: store.read_facts(encoder.dataset("gene_brain_alignment"))
                                 .get("model_sha256") for encoder in encoders}},
            metadata={
                **{f"heldout_r1_mean/{name}": round(float(row.heldout_r1), 4) for name, row in means.iterrows()},
                **{f"label_metric_mean/{name}": round(float(row.label_metric), 4)
                   for name, row in means.iterrows() if np.isfinite(row.label_metric)},
                "by_encoder": png_markdown(encoder_comparison_png(summary),
                                           "held-out first canonical correlation (and label metric) per encoder: "
                                           "folds as points, their mean as a bar"),
            },
        )

    return gene_brain_alignment_by_encoder
