"""subject_haplotypes: each subject's VCF alleles applied to the reference regions of one chromosome."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import dagster as dg
import pyarrow as pa

from kb_assets.assets.inputs import input_key
from kb_assets.assets.publishing import (
    ANNOTATION_FACTS,
    REFERENCE_FACTS,
    arrow_table,
    input_facts,
    publish,
    upstream_facts,
)
from kb_assets.genome import COUNT_DESCRIPTIONS, ReferenceGenome, build_haplotypes, reference_haplotypes
from kb_assets.resources import WarehouseResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import Recipe
from kb_assets.storage import view_name

CODE_VERSION = "2"
ALLELE_SCHEMA = pa.schema([
    ("region_id", pa.string()),
    ("allele", pa.int32()),
    ("sequence", pa.string()),
    ("length", pa.int64()),
    ("edits", pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string())]))),
    ("carriers", pa.int64()),
])


def build_haplotype_assets(recipe: Recipe, chromosomes: dg.PartitionsDefinition) -> list:
    code_version = f"{CODE_VERSION}-{recipe.fingerprint('reference', 'regions', 'haplotypes')}"

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name="subjects", code_version=code_version,
        deps=["reference_sequences", *([input_key("vcf")] if recipe.inputs.vcf else [])],
        partitions_def=chromosomes,
        kinds={"vcf", "parquet"},
    )
    def subject_haplotypes(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Each region's distinct alleles on one chromosome (allele 0 = the reference; the edits that make each),
        and, sparsely, the subject × region × haplotype units carrying a non-reference allele: every unit not
        listed carries the reference, so storage follows what subjects do not share."""
        settings = recipe.checked()
        store = warehouse.get()
        chrom = context.partition_key
        regions = store.read_partition("reference_sequences", chrom).to_pandas()
        if settings.inputs.vcf is None or regions.empty:
            result = reference_haplotypes(regions)
        else:
            options = settings.haplotypes
            result = build_haplotypes(
                settings.inputs.vcf, regions, ReferenceGenome(settings.inputs.fasta),
                mode=options.mode, missing_genotypes=options.missing_genotypes, filters=options.filters,
                max_ref_mismatch_fraction=options.max_ref_mismatch_fraction,
            )
        counts = result.counts
        units = counts["subjects"] * counts["regions"] * result.ploidy
        return publish(
            context, store, settings,
            {
                "subject_haplotypes/assignments": arrow_table(result.assignments),
                "subject_haplotypes/alleles": pa.Table.from_pandas(result.alleles, ALLELE_SCHEMA, preserve_index=False),
                "subject_haplotypes/subjects": arrow_table(result.subjects),
            },
            facts={
                "haplotype_mode": settings.haplotypes.mode,
                "ploidy": result.ploidy,
                "missing_genotypes": settings.haplotypes.missing_genotypes,
                **upstream_facts(store, "reference_sequences", REFERENCE_FACTS + ANNOTATION_FACTS, chrom),
            },
            metadata={
                **{f"counts/{name}": value for name, value in counts.items()},
                "count_descriptions": dg.MetadataValue.json(COUNT_DESCRIPTIONS),
                # Ids by the thousand would bloat every event: a sample here; the subjects table flags them all.
                "excluded_subjects_first_20": result.excluded_subjects[:20],
                "excluded_subjects_table": view_name("subject_haplotypes/subjects"),
                "alleles": len(result.alleles),
                # Share of subject × region × haplotype units stored (the rest carry the reference).
                "non_reference_share": round(counts["non_reference_haplotypes"] / units, 6) if units else 0.0,
            },
            inputs=input_facts(store, vcf=settings.inputs.vcf),
        )

    return [subject_haplotypes]
