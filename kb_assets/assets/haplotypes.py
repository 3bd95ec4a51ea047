"""subject_haplotypes: each subject's VCF alleles applied to the reference regions of one chromosome."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import dagster as dg

from kb_assets.assets.publishing import ANNOTATION_FACTS, REFERENCE_FACTS, arrow_table, publish, upstream_facts
from kb_assets.genome import COUNT_DESCRIPTIONS, build_haplotypes, reference_haplotypes
from kb_assets.resources import CohortResource, GenomeResource, RecipeResource, WarehouseResource
from kb_assets.settings import Recipe

CODE_VERSION = "1"


def build_haplotype_assets(recipe: Recipe, chromosomes: dg.PartitionsDefinition, reference_sequences) -> list:
    code_version = f"{CODE_VERSION}-{recipe.fingerprint('reference', 'regions', 'haplotypes')}"

    @dg.asset(
        group_name="subjects", code_version=code_version, deps=[reference_sequences], partitions_def=chromosomes,
        kinds={"vcf", "parquet"},
    )
    def subject_haplotypes(
        context: dg.AssetExecutionContext,
        recipe: RecipeResource,
        genome: GenomeResource,
        cohort: CohortResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """The distinct sequences of one chromosome's regions across the cohort (id = sha256 of the sequence), and
        which one each subject carries per region and haplotype. Subject REF is the reference; a subject without
        a variant in a region points at the reference sequence, so it costs nothing to embed."""
        settings = recipe.settings()
        store = warehouse.get()
        chrom = context.partition_key
        regions = store.read_partition("reference_sequences", chrom).to_pandas()
        if cohort.vcf is None or regions.empty:
            result = reference_haplotypes(regions)
        else:
            options = settings.haplotypes
            result = build_haplotypes(
                cohort.vcf, regions, genome.open_reference(),
                mode=options.mode, missing_genotypes=options.missing_genotypes, filters=options.filters,
                max_ref_mismatch_fraction=options.max_ref_mismatch_fraction,
            )
        n_haplotype_rows = len(result.assignments)
        counts = result.counts
        return publish(
            context, store, settings,
            {
                "subject_haplotypes/assignments": arrow_table(result.assignments),
                "subject_haplotypes/sequences": arrow_table(result.sequences),
            },
            facts={
                "haplotype_mode": settings.haplotypes.mode,
                "missing_genotypes": settings.haplotypes.missing_genotypes,
                **upstream_facts(store, "reference_sequences", REFERENCE_FACTS + ANNOTATION_FACTS, chrom),
            },
            metadata={
                **{f"counts/{name}": value for name, value in counts.items()},
                "count_descriptions": dg.MetadataValue.json(COUNT_DESCRIPTIONS),
                "excluded_subjects": result.excluded_subjects,
                "unique_sequences": counts["unique_sequences"],
                # Share of subject × region × haplotype rows that need a forward pass of their own.
                "dedup_ratio": round(counts["unique_sequences"] / n_haplotype_rows, 6) if n_haplotype_rows else 0.0,
            },
            inputs={"vcf": {"path": cohort.vcf, "sha256": store.input_sha256(cohort.vcf)}} if cohort.vcf else {},
            upstream=[("reference_sequences", chrom)],
        )

    return [subject_haplotypes]
