"""Deterministic demo inputs: a synthetic genome, its GENCODE-style annotation, an ordered gene set, a cohort VCF,
a covariates table, a brain feature table with a planted gene–brain association, a tiny DNABERT-2 checkpoint and a
tiny Caduceus-PS checkpoint to compare it with, written where a recipe's `inputs` say.

Plain Python (no Dagster): `kb-assets demo init` calls `generate_demo_inputs`. Every random choice comes from a
numpy Generator seeded from DEMO_SEED and every compressed file has a fixed header, so two runs write
byte-identical files. `layout.GENES` is the one source of truth for the annotation; `layout.GENE_SET` lists the
committed manifest data/gene_sets/demo_gene_set.tsv, which the generator rewrites identically. The file writers
(FASTA, GTF, VCF, checkpoint) and the GC-varying background sequence are the benchmarks' shared ones
(kb_assets.benchmarks.synthetic); what is the demo's own is the hand-written gene table, the repeats and the
VCF's special sites.

    layout.py      the gene table, its placement, N runs and the gene set
    genome.py      the genome (with repeats) and the annotation
    cohort.py      subjects, the VCF and the covariates
    checkpoint.py  the tiny DNABERT-2 and Caduceus checkpoints
    brain.py       brain feature tables (planted association or none)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kb_assets.demo.brain import write_demo_brain
from kb_assets.demo.checkpoint import CADUCEUS_FILES, CHECKPOINT_FILES, write_demo_caduceus, write_demo_checkpoint
from kb_assets.demo.cohort import (
    N_COVARIATES_ONLY,
    N_GENOTYPES_ONLY,
    N_VCF_SUBJECTS,
    build_sites,
    build_subjects,
    write_cohort_vcf,
    write_covariates,
)
from kb_assets.demo.genome import build_genome, write_annotation, write_genome
from kb_assets.demo.layout import (
    CHROMOSOMES,
    DEMO_SEED,
    EXON_N_GENE,
    GENE_SET,
    GENE_SET_BY_ID,
    GENES,
    build_layout,
    gene_set_text,
    write_gene_set,
)
from kb_assets.settings import Recipe

__all__ = [
    "CHECKPOINT_FILES",
    "CHROMOSOMES",
    "DEMO_SEED",
    "EXON_N_GENE",
    "GENES",
    "GENE_SET",
    "GENE_SET_BY_ID",
    "N_COVARIATES_ONLY",
    "N_GENOTYPES_ONLY",
    "N_VCF_SUBJECTS",
    "build_genome",
    "build_layout",
    "build_sites",
    "build_subjects",
    "gene_set_text",
    "generate_demo_inputs",
]


def generate_demo_inputs(recipe: Recipe, *, force: bool = False) -> dict[str, Path]:
    """Write every input the recipe's `inputs` names; returns input name → path.

    An input whose files all exist is left alone unless `force`. The layout and genome are rebuilt on every call
    (well under a second), so a partial rerun writes files consistent with the ones already there.
    """
    inputs = recipe.inputs
    layout = build_layout()
    genome = build_genome(layout)
    subjects = build_subjects()
    # name → (path, the files that must all exist for it to count as written, writer)
    plan: dict[str, tuple[Path, list[Path], Callable[[Path], None]]] = {
        "fasta": (inputs.fasta, [Path(f"{inputs.fasta}.fai")], lambda path: write_genome(path, genome)),
        "gtf": (inputs.gtf, [], lambda path: write_annotation(path, layout)),
        "gene_set": (inputs.gene_set, [], lambda path: write_gene_set(path, layout)),
        "checkpoint": (inputs.checkpoint, [inputs.checkpoint / name for name in CHECKPOINT_FILES],
                       lambda path: write_demo_checkpoint(path, genome)),
    }
    if inputs.vcf is not None:
        plan["vcf"] = (inputs.vcf, [Path(f"{inputs.vcf}.tbi")],
                       lambda path: write_cohort_vcf(path, layout, genome, subjects, inputs.fasta.name))
    if inputs.covariates is not None:
        plan["covariates"] = (inputs.covariates, [], lambda path: write_covariates(path, subjects))
    for name, folder in inputs.compare_with.items():
        plan[f"compare_with.{name}"] = (folder, [folder / file for file in CADUCEUS_FILES], write_demo_caduceus)
    if inputs.brain is not None and inputs.vcf is not None and inputs.covariates is not None:
        # Last: it reads the genome, annotation, VCF and covariates written above.
        plan["brain"] = (inputs.brain, [], lambda path: write_demo_brain(path, inputs.fasta, inputs.gtf, inputs.vcf,
                                                                         inputs.covariates))
    for path, companions, write in plan.values():
        if force or not all(file.exists() for file in [path, *companions]):
            write(path)
    return {name: path for name, (path, _, _) in plan.items()}
