"""The demo-input generator: deterministic, complete, and shaped like the real inputs it stands in for.

The inputs are generated once per module into a temporary copy of the demo recipe's folder layout.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import cyvcf2
import pandas as pd
import pyfaidx
import pyranges as pr
import pytest
import torch

from kb_assets.demo import (
    EXON_N_GENE,
    GENE_SET,
    GENE_SET_BY_ID,
    N_COVARIATES_ONLY,
    N_GENOTYPES_ONLY,
    build_layout,
    gene_set_text,
    generate_demo_inputs,
)
from kb_assets.demo.brain import DEMO_PLANTED_GENES
from kb_assets.encoders.families import load_any_encoder
from kb_assets.encoders.tokenizer import SPECIAL_TOKENS, load_tokenizer
from kb_assets.genome.annotation import load_annotation
from kb_assets.genome.gene_set import read_gene_set, resolve_gene_set
from kb_assets.settings import DEMO_RECIPE, Recipe, load_recipe

CHROMOSOMES = {"chr1", "chr2", "chrX"}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    """The demo recipe copied into a temporary folder: its relative input paths all land there."""
    root = tmp_path_factory.mktemp("demo_inputs")
    (root / "demo").mkdir()
    shutil.copy(DEMO_RECIPE, root / "demo" / "recipe.yaml")
    return load_recipe(root / "demo" / "recipe.yaml", require_inputs=False)


@pytest.fixture(scope="module")
def demo(recipe: Recipe) -> dict[str, Path]:
    return generate_demo_inputs(recipe)


@pytest.fixture(scope="module")
def fasta(demo: dict[str, Path]) -> dict[str, str]:
    genome = pyfaidx.Fasta(str(demo["fasta"]), sequence_always_upper=False)
    return {name: genome[name][:].seq for name in genome.keys()}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "recipe.yaml"
    }


def _folder(recipe: Recipe) -> Path:
    """The folder holding every generated input (the recipe's folder and ../gene_sets)."""
    return recipe.source.parent.parent


def test_writes_every_input_the_recipe_names(recipe: Recipe, demo: dict[str, Path]) -> None:
    named = {name: path for name, path in recipe.inputs.model_dump().items()
             if path is not None and name != "compare_with"}
    named.update({f"compare_with.{name}": path for name, path in recipe.inputs.compare_with.items()})
    assert demo == named and set(recipe.inputs.compare_with) == {"caduceus_ps"} and recipe.inputs.brain
    recipe.check_inputs()
    assert Path(f"{demo['fasta']}.fai").is_file() and Path(f"{demo['vcf']}.tbi").is_file()


def test_a_second_run_with_force_rewrites_identical_bytes(recipe: Recipe, demo: dict[str, Path]) -> None:
    before = _digests(_folder(recipe))
    written_at = demo["fasta"].stat().st_mtime_ns
    generate_demo_inputs(recipe, force=True)
    assert demo["fasta"].stat().st_mtime_ns != written_at, "force did not rewrite the FASTA"
    assert _digests(_folder(recipe)) == before


def test_without_force_only_missing_inputs_are_written(recipe: Recipe, demo: dict[str, Path]) -> None:
    before = _digests(_folder(recipe))
    untouched = {path: path.stat().st_mtime_ns for path in (demo["fasta"], demo["gtf"], demo["vcf"])}
    demo["covariates"].unlink()
    Path(f"{demo['vcf']}.tbi").unlink()  # a VCF without its index counts as not written
    (demo["checkpoint"] / "tokenizer_config.json").unlink()  # as an interrupted checkpoint write leaves it
    generate_demo_inputs(recipe)
    assert _digests(_folder(recipe)) == before
    assert demo["fasta"].stat().st_mtime_ns == untouched[demo["fasta"]]
    assert demo["gtf"].stat().st_mtime_ns == untouched[demo["gtf"]]
    assert demo["vcf"].stat().st_mtime_ns != untouched[demo["vcf"]]
    assert not list(_folder(recipe).rglob(".partial.*"))


def test_genome_has_three_chromosomes_soft_masking_and_n_runs(fasta: dict[str, str]) -> None:
    assert set(fasta) == CHROMOSOMES
    assert sum(len(sequence) for sequence in fasta.values()) >= 2_000_000
    for name, sequence in fasta.items():
        assert set(sequence) <= set("ACGTacgtN"), name
        assert any(base.islower() for base in sequence), f"{name} has no soft-masked bases"
        assert "N" * 100 in sequence, f"{name} has no N run"
    upper = fasta["chr1"].upper()
    gc = [(window.count("G") + window.count("C")) / len(window)
          for window in (upper[i : i + 50_000] for i in range(50_000, 950_000, 50_000))]
    assert max(gc) - min(gc) > 0.03, "GC content should vary along the chromosome"


def _gtf(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyranges 0.1.x calls pandas APIs newer pandas deprecates
        return pr.read_gtf(str(path), as_df=True, duplicate_attr=True)


def test_annotation_is_a_gencode_style_gtf(demo: dict[str, Path]) -> None:
    with gzip.open(demo["gtf"], "rt") as handle:
        header = [line for line in handle if line.startswith("##")]
    assert header[0].startswith("##description: evidence-based annotation of the human genome (GRCh38), version 0")
    assert "##provider: GENCODE\n" in header and "##format: gtf\n" in header

    gtf = _gtf(demo["gtf"])
    assert {"gene", "transcript", "exon", "CDS", "UTR"} <= set(gtf.Feature)
    genes = gtf[gtf.Feature == "gene"]
    assert len(genes) >= 40 and set(genes.Strand) == {"+", "-"} and set(genes.Chromosome) == CHROMOSOMES
    assert genes.gene_name.is_unique and genes.gene_id.str.fullmatch(r"ENSG\d{11}\.\d+").all()
    exons = gtf[gtf.Feature == "exon"]
    assert exons.transcript_id.str.fullmatch(r"ENST\d{11}\.\d+").all()
    assert exons.exon_number.notna().all()
    transcripts_per_gene = gtf[gtf.Feature == "transcript"].groupby("gene_id").size()
    assert transcripts_per_gene.max() >= 3
    exons_per_gene = exons.groupby("gene_id").size()
    assert (exons_per_gene == 1).any(), "no single-exon gene"
    assert ((exons.End - exons.Start) > 3_000).any(), "no exon longer than 3 kb"
    lncrna = genes[genes.gene_type == "lncRNA"].gene_id
    assert len(lncrna) and not gtf[(gtf.Feature == "CDS") & gtf.gene_id.isin(lncrna)].size
    tags = gtf[gtf.Feature == "transcript"].tag.fillna("")
    assert tags.str.contains("Ensembl_canonical").any() and tags.str.contains("MANE_Select").any()


def test_transcript_choice_has_every_case_to_decide(demo: dict[str, Path]) -> None:
    annotation = load_annotation(demo["gtf"])
    transcripts = annotation.transcripts
    canonical_not_longest = [
        gene_id for gene_id, group in transcripts.groupby("gene_id")
        if group.is_ensembl_canonical.any() and not group.loc[group.exon_length.idxmax(), "is_ensembl_canonical"]
    ]
    assert canonical_not_longest, "the canonical transcript is the longest in every gene"
    per_gene = transcripts.groupby("gene_id")[["is_ensembl_canonical", "is_mane_select"]].any()
    assert (per_gene.is_mane_select & ~per_gene.is_ensembl_canonical).any(), "no gene with only MANE_Select"
    untagged = per_gene.index[~per_gene.is_ensembl_canonical & ~per_gene.is_mane_select]
    assert len(untagged), "no gene without canonical tags"
    untagged_coding = transcripts[transcripts.gene_id.isin(untagged) & (transcripts.cds_length > 0)]
    assert any(
        group.cds_length.idxmax() != group.exon_length.idxmax() for _, group in untagged_coding.groupby("gene_id")
    ), "longest CDS and longest transcript agree in every untagged gene"


def test_committed_gene_set_is_the_generated_one_and_resolves(demo: dict[str, Path]) -> None:
    committed = load_recipe(DEMO_RECIPE, require_inputs=False).inputs.gene_set
    assert committed.read_text() == demo["gene_set"].read_text() == gene_set_text(build_layout())
    assert committed.read_text().startswith("#")

    entries = read_gene_set(committed)
    assert len(entries) >= 12 and len(entries) == len(GENE_SET)
    assert sum(entry.startswith("ENSG") and "." not in entry for entry in entries) == len(GENE_SET_BY_ID) >= 1
    resolved = resolve_gene_set(entries, load_annotation(demo["gtf"]), committed)
    assert list(resolved.gene_name) == list(GENE_SET)
    assert set(resolved.chrom) == CHROMOSOMES
    genomic = resolved.sort_values(["chrom", "start"]).gene_order.tolist()
    assert genomic != sorted(genomic), "the manifest should not be in genomic order"
    assert set(resolved.transcript_choice) >= {"ensembl_canonical", "mane_select", "longest_cds"}


def test_only_one_gene_set_gene_has_n_in_its_exons_and_little(
    demo: dict[str, Path], fasta: dict[str, str]
) -> None:
    annotation = load_annotation(demo["gtf"])
    resolved = resolve_gene_set(read_gene_set(demo["gene_set"]), annotation)
    exons = annotation.exons.merge(resolved[["transcript_id", "gene_name"]], on="transcript_id")
    n_share = {
        gene: "".join(fasta[row.chrom][row.start : row.end] for row in group.itertuples()).count("N")
        / (group.end - group.start).sum()
        for gene, group in exons.groupby("gene_name")
    }
    with_n = {gene: share for gene, share in n_share.items() if share}
    assert list(with_n) == [EXON_N_GENE]
    assert with_n[EXON_N_GENE] < load_recipe(DEMO_RECIPE, require_inputs=False).regions.max_n_fraction


def test_cohort_vcf_has_every_genotype_shape_and_matches_the_reference(
    demo: dict[str, Path], fasta: dict[str, str]
) -> None:
    vcf = cyvcf2.VCF(str(demo["vcf"]))
    assert len(vcf.samples) >= 200 and vcf.samples[0] == "SUBJ0001"
    seen = {"multi_allelic": 0, "insertion": 0, "deletion": 0, "snv": 0, "missing": 0, "phased": 0,
            "unphased": 0, "lowqual": 0}
    previous = ("", 0)
    contigs = ["chr1", "chr2", "chrX"]
    for record in vcf:
        assert fasta[record.CHROM][record.start : record.end].upper() == record.REF, f"{record.CHROM}:{record.POS}"
        position = (record.CHROM, record.POS)
        assert (contigs.index(position[0]), position[1]) > (contigs.index(previous[0] or "chr1"), previous[1])
        previous = position
        seen["multi_allelic"] += len(record.ALT) > 1
        seen["insertion"] += any(len(alt) > len(record.REF) for alt in record.ALT)
        seen["deletion"] += any(len(alt) < len(record.REF) for alt in record.ALT)
        seen["snv"] += record.is_snp
        seen["lowqual"] += record.FILTER == "LowQual"
        called = record.gt_types != vcf.UNKNOWN
        seen["missing"] += int((~called).sum())
        seen["phased"] += int(record.gt_phases[called].sum())
        seen["unphased"] += int((~record.gt_phases[called]).sum())
        assert max(len(record.REF), *(len(alt) for alt in record.ALT)) <= 11
    assert all(seen.values()), seen
    assert seen["phased"] > 5 * seen["unphased"], "genotypes should be mostly phased"
    # The tabix index answers region queries.
    assert len(list(vcf("chrX"))) > 0


def test_covariates_cover_all_but_two_vcf_subjects_plus_two_others(demo: dict[str, Path]) -> None:
    covariates = pd.read_csv(demo["covariates"], sep="\t")
    assert list(covariates.columns) == [
        "subject_id", "age", "sex", *(f"pc{i}" for i in range(1, 11)), "batch", "site", "label",
    ]
    assert not covariates.isna().any().any() and covariates.subject_id.is_unique
    genotyped = set(cyvcf2.VCF(str(demo["vcf"])).samples)
    listed = set(covariates.subject_id)
    assert len(genotyped - listed) == N_GENOTYPES_ONLY and len(listed - genotyped) == N_COVARIATES_ONLY
    assert covariates.age.between(40, 80).all() and set(covariates.sex) == {"F", "M"}
    assert covariates.batch.nunique() == 3 and covariates.site.nunique() == 6
    assert set(covariates.label) == {0, 1}


def test_checkpoint_is_laid_out_like_dnabert2(demo: dict[str, Path], fasta: dict[str, str]) -> None:
    folder = demo["checkpoint"]
    config = json.loads((folder / "config.json").read_text())
    assert "model_type" not in config and "architectures" not in config
    assert config["vocab_size"] == 4096 and config["hidden_size"] % config["num_attention_heads"] == 0

    tokenizer = load_tokenizer(folder)
    assert tokenizer.vocab_size == 4096
    assert [tokenizer.id_to_token(i) for i in range(9)] == [*SPECIAL_TOKENS, "A", "C", "G", "T"]
    # Trained on the demo genome, it cuts it into multi-base tokens as the real one cuts human DNA (about 5 bp).
    sample = fasta["chr2"][100_000:150_000].upper()
    assert 3.5 < len(sample) / len(tokenizer.encode(sample)) < 7

    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert state["bert.embeddings.word_embeddings.weight"].shape == (4096, config["hidden_size"])
    assert any(key.startswith("cls.predictions.") for key in state)
    assert not any(key.startswith("bert.pooler") for key in state)


def test_the_comparison_checkpoint_is_a_caduceus_ps(demo: dict[str, Path]) -> None:
    encoder = load_any_encoder(demo["compare_with.caduceus_ps"], device="cpu", dtype="float32")
    assert (encoder.family, encoder.rc_mode_native, encoder.hidden_size) == ("caduceus", "equivariant", 32)


def test_brain_table_plants_carriers_of_two_genes_on_three_features(recipe: Recipe, demo: dict[str, Path]) -> None:
    """Carriers of exonic variants in SCN2A_demo or CHD8_demo (found here with cyvcf2 on the GTF's exons, apart from
    the pipeline) sit about one SD higher on idp_001..idp_003 than the others; idp_004 onwards do not move."""
    brain = pd.read_csv(demo["brain"], sep="\t").set_index("subject_id")
    covariates = pd.read_csv(demo["covariates"], sep="\t")
    assert list(brain.index) == covariates["subject_id"].tolist() and brain.shape[1] == 12
    annotation = load_annotation(demo["gtf"])
    exons = annotation.exons.merge(annotation.genes[["gene_id", "gene_name"]], on="gene_id")
    vcf = cyvcf2.VCF(str(demo["vcf"]))
    samples = vcf.samples
    carriers: set[str] = set()
    for gene in DEMO_PLANTED_GENES:
        for exon in exons[exons["gene_name"] == gene].itertuples():
            for record in vcf(f"{exon.chrom}:{exon.start + 1}-{exon.end}"):
                if record.FILTER is None and record.end > exon.start and record.start < exon.end:
                    alternate = (record.genotype.array()[:, :2] > 0).any(axis=1)
                    carriers |= {samples[i] for i in alternate.nonzero()[0]}
    carrying = brain.index.isin(carriers)
    assert 10 < carrying.sum() < len(brain) - 10
    shift = (brain[carrying].mean() - brain[~carrying].mean()) / brain.std()
    assert (shift.iloc[:3] > 0.7).all() and (shift.iloc[3:].abs() < 0.5).all()
