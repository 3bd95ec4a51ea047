"""The reference half of the graph: genome, annotation, gene set, and per-chromosome region sequences."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
from pathlib import Path

import dagster as dg
import pandas as pd
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
from kb_assets.genome import (
    REGION_DTYPES,
    Annotation,
    ReferenceGenome,
    check_contig_names,
    check_genes_on_chromosomes,
    extract_regions,
    load_annotation,
    read_gene_set,
    resolve_gene_set,
)
from kb_assets.resources import WarehouseResource
from kb_assets.schedules import after_upstream_data_changes
from kb_assets.settings import Recipe

GROUP = "reference"
# Bump when the code of an asset changes what it writes; recipe fingerprints cover the settings.
CODE_VERSION = "1"
ANNOTATION_TABLES = ("genes", "transcripts", "exons", "cds", "utrs")


def read_annotation(warehouse, source: str) -> Annotation:
    """The annotation as gene_annotations wrote it: no second parse of the GTF."""
    frames = {name: warehouse.read_table(f"gene_annotations/{name}").to_pandas() for name in ANNOTATION_TABLES}
    facts = upstream_facts(warehouse, "gene_annotations/genes", ANNOTATION_FACTS + ("unnamed_genes",))
    return Annotation(
        **frames,
        version=facts.get("annotation_version", Path(source).name),
        source=Path(source),
        unnamed_genes=facts.get("unnamed_genes", 0),
    )


def _gene_set_markdown(genes: pd.DataFrame) -> str:
    lines = ["| # | query | gene | chrom | strand | transcript | chosen by |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {g.gene_order} | {g.query} | {g.gene_name} ({g.gene_id}) | {g.chrom} | {g.strand} | "
        f"{g.transcript_id} | {g.transcript_choice} |"
        for g in genes.itertuples()
    ]
    return "\n".join(lines)


def build_reference_assets(recipe: Recipe, chromosomes: dg.PartitionsDefinition) -> list:
    reference_code = f"{CODE_VERSION}-{recipe.fingerprint('reference')}"
    regions_code = f"{CODE_VERSION}-{recipe.fingerprint('reference', 'regions')}"

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=reference_code, deps=[input_key("fasta")], kinds={"fasta", "parquet"})
    def reference_genome(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The reference FASTA (.fai built if missing): contigs, lengths, build and file hash."""
        settings = recipe.checked()
        store = warehouse.get()
        reference = ReferenceGenome(settings.inputs.fasta)
        # The first asset to run: every naming mismatch among the inputs is reported here, at once (the .fai, the
        # GTF's first records and the VCF header are cheap to read).
        check_contig_names(reference, settings.reference.chromosomes, settings.inputs.gtf, settings.inputs.vcf)
        contigs = pa.table(
            {
                "contig": list(reference.contigs),
                "length": list(reference.contigs.values()),
                "in_recipe": [c in settings.reference.chromosomes for c in reference.contigs],
            }
        )
        inputs = input_facts(store, fasta=settings.inputs.fasta)
        sha256 = inputs["fasta"]["sha256"]
        # The file's hash in every row: the data version then changes with the sequence, not only the lengths.
        contigs = contigs.append_column("fasta_sha256", pa.array([sha256] * contigs.num_rows, pa.string()))
        return publish(
            context, store, settings, {"reference_genome": contigs},
            facts={"reference_version": f"{settings.reference.build} sha256:{sha256[:12]}",
                   "reference_sha256": sha256},
            metadata={"build": settings.reference.build, "total_length": int(sum(reference.contigs.values()))},
            inputs=inputs,
        )

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=reference_code, deps=[reference_genome, input_key("gtf")],
              kinds={"gtf", "parquet"})
    def gene_annotations(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Genes, transcripts, exons, CDS and UTRs of the GTF (pyranges), with the annotation version."""
        settings = recipe.checked()
        annotation = load_annotation(settings.inputs.gtf)
        # Every contig of the GTF this time, not only its first records' (the GTF may also have changed alone).
        check_contig_names(ReferenceGenome(settings.inputs.fasta), settings.reference.chromosomes, annotation,
                           settings.inputs.vcf)
        store = warehouse.get()
        inputs = input_facts(store, gtf=settings.inputs.gtf)
        tables = {f"gene_annotations/{name}": arrow_table(getattr(annotation, name)) for name in ANNOTATION_TABLES}
        return publish(
            context, store, settings, tables,
            facts={
                "annotation_version": annotation.version,
                "annotation_sha256": inputs["gtf"]["sha256"],
                "unnamed_genes": annotation.unnamed_genes,
                **upstream_facts(store, "reference_genome", REFERENCE_FACTS),
            },
            inputs=inputs,
        )

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=reference_code, deps=[gene_annotations, input_key("gene_set")],
              kinds={"parquet"})
    def gene_set(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The ordered gene manifest, each entry resolved to one gene and its canonical transcript."""
        settings = recipe.checked()
        store = warehouse.get()
        annotation = read_annotation(store, str(settings.inputs.gtf))
        genes = resolve_gene_set(read_gene_set(settings.inputs.gene_set), annotation, source=settings.inputs.gene_set)
        check_genes_on_chromosomes(annotation, settings.reference.chromosomes, genes)
        return publish(
            context, store, settings, {"gene_set": arrow_table(genes)},
            facts={
                "n_genes": len(genes),
                **upstream_facts(store, "gene_annotations/genes", REFERENCE_FACTS + ANNOTATION_FACTS),
            },
            metadata={
                "genes": dg.MetadataValue.md(_gene_set_markdown(genes)),
                "chromosomes": sorted(genes["chrom"].unique().tolist()),
                # Symbols naming a pseudoautosomal gene and its chrY copy: the chrX copy is used.
                "par_y_copies_left_out": genes.attrs["par_y_copies_left_out"],
            },
            inputs=input_facts(store, gene_set=settings.inputs.gene_set),
        )

    @dg.asset(
        automation_condition=after_upstream_data_changes(),
        group_name=GROUP, code_version=regions_code, deps=[gene_set, gene_annotations], partitions_def=chromosomes,
        kinds={"parquet"},
        check_specs=[dg.AssetCheckSpec(
            "non_acgt_share", asset="reference_sequences",
            description="regions whose share of N and other non-ACGT bases (each one [UNK] token, never "
                        "pooled) exceeds the recipe's regions.max_n_fraction",
        )],
    )
    def reference_sequences(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Region sequences of the gene-set genes on one chromosome (default: exons of the canonical
        transcript), uppercased, minus strand reverse-complemented."""
        settings = recipe.checked()
        store = warehouse.get()
        chrom = context.partition_key
        genes = store.read_table("gene_set").to_pandas()
        genes = genes[genes["chrom"] == chrom]
        if len(genes):
            regions = extract_regions(
                ReferenceGenome(settings.inputs.fasta), read_annotation(store, str(settings.inputs.gtf)), genes, chrom,
                settings.regions.mode,
                promoter_upstream=settings.regions.promoter_upstream,
                promoter_downstream=settings.regions.promoter_downstream,
            )
        else:
            # A chromosome without gene-set genes needs neither the FASTA nor the annotation.
            regions = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in REGION_DTYPES.items()})
        skipped = regions.attrs.get("skipped", {})
        limit = settings.regions.max_n_fraction
        n_heavy = regions[regions["non_acgt_count"] > limit * regions["length"]]
        n_check = dg.AssetCheckResult(
            check_name="non_acgt_share", passed=n_heavy.empty, severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "max_n_fraction": limit,
                "regions_over": len(n_heavy),
                "examples": [f"{r.region_id} ({r.gene_name}): {r.non_acgt_count}/{r.length} non-ACGT"
                             for r in n_heavy.head(10).itertuples()],
            },
        )
        return publish(
            context, store, settings, {"reference_sequences": arrow_table(regions)},
            facts={
                "region_mode": settings.regions.mode,
                **upstream_facts(store, "gene_set", REFERENCE_FACTS + ANNOTATION_FACTS),
            },
            metadata={
                "n_genes": int(genes["gene_id"].nunique()),
                "total_bp": int(regions["length"].sum()),
                "non_acgt_bases": int(regions["non_acgt_count"].sum()),
                "genes_without_regions": skipped,
            },
            check_results=[n_check],
        )

    return [reference_genome, gene_annotations, gene_set, reference_sequences]
