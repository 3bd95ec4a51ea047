"""Schedules, sensors and automation: how the graph keeps itself current, with Dagster's own data versions.

- The input files are observable source assets (kb_assets.assets.inputs): the sensor `observe_inputs` (on by
  default) observes them every minute, so the UI marks exactly the assets and partitions built from a changed file
  as stale, by itself.
- Every materializable asset outside the diagnostics carries `after_upstream_data_changes`: it runs once its
  dependencies are present and idle and one of them got new data (a new data version, not merely a new run). The
  sensor `follow_inputs` (off by default: it launches forward passes) applies it to the reference, subject and
  embedding stages, so a changed input travels down the graph and stops where an output comes out as it was;
  `cohort_follows_embeddings` (on) applies it to the cohort stage.
- `chromosome_refresh` (off by default; cron from the recipe) launches one run per chromosome partition of the
  embedding chain; unchanged inputs cost only cache lookups.
"""

from __future__ import annotations

import dagster as dg

from kb_assets.assets.encoders import recipe_encoders
from kb_assets.assets.inputs import input_key, input_names
from kb_assets.settings import Recipe, recipe_run_tags

SHARED_CHAIN = ("reference_sequences", "subject_haplotypes")
ENCODER_CHAIN = ("tokenized_genes", "gene_embeddings")  # per encoder of the recipe
FOLLOWING_GROUPS = ("reference", "subjects")
EMBEDDING_GROUP = "embeddings"  # per encoder
COHORT_GROUP = "cohort"  # per encoder; covariates and folds in the primary encoder's


def after_upstream_data_changes() -> dg.AutomationCondition:
    """Run once every dependency is present and idle, after any of them got new data (not merely re-ran)."""
    return (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after upstream data changes")


def build_automation(recipe: Recipe) -> dict:
    """The jobs, schedule and sensors of the code location, for `build_definitions`."""
    inputs = dg.AssetSelection.assets(*(input_key(name) for name in input_names(recipe)))
    encoders = recipe_encoders(recipe)
    chain = [*SHARED_CHAIN, *(encoder.key(name) for encoder in encoders for name in ENCODER_CHAIN)]
    tags = recipe_run_tags(recipe)
    chromosome_job = dg.define_asset_job("chromosome_embeddings", selection=dg.AssetSelection.assets(*chain),
                                         description="one chromosome partition of the embedding chain, every "
                                                     "encoder of the recipe", tags=tags)
    observe_job = dg.define_asset_job("observe_inputs", selection=inputs, tags=tags,
                                      description="hash every input file the recipe names")

    @dg.schedule(job=chromosome_job, cron_schedule=recipe.schedule.cron,
                 default_status=dg.DefaultScheduleStatus.STOPPED)
    def chromosome_refresh(context: dg.ScheduleEvaluationContext):
        """One run per chromosome partition; the run key keeps a tick from launching a partition twice."""
        tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        for chrom in recipe.reference.chromosomes:
            yield dg.RunRequest(run_key=f"{tick}:{chrom}", partition_key=chrom,
                                tags={**tags, "kb_assets/trigger": "chromosome_refresh"})

    sensors = [
        dg.AutomationConditionSensorDefinition(
            "observe_inputs", target=inputs, default_status=dg.DefaultSensorStatus.RUNNING, run_tags=tags,
            description="Observes the input files every minute (a stat each; a hash only when one changed)",
        ),
        dg.AutomationConditionSensorDefinition(
            "follow_inputs", target=dg.AssetSelection.groups(
                *FOLLOWING_GROUPS, *(encoder.group(EMBEDDING_GROUP) for encoder in encoders)),
            default_status=dg.DefaultSensorStatus.STOPPED, run_tags=tags,
            description="Re-materializes the reference, subject and embedding stages after an input changed",
        ),
        dg.AutomationConditionSensorDefinition(
            "cohort_follows_embeddings",
            target=dg.AssetSelection.groups(*(encoder.group(COHORT_GROUP) for encoder in encoders)),
            default_status=dg.DefaultSensorStatus.RUNNING, run_tags=tags,
            description="Materializes the cohort assets once every embedding partition is present and one changed",
        ),
    ]
    return {"jobs": [chromosome_job, observe_job], "schedules": [chromosome_refresh], "sensors": sensors}
