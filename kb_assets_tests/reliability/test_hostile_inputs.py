"""Hostile and broken inputs at the asset level: names with quotes and semicolons round-trip through parquet and the
DuckDB catalog unchanged, and a broken VCF or covariates file fails its asset with one clear message while every
earlier output stays byte-identical. (Each parser's own messages are tested in genome/, stats/ and test_settings.)"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kb_assets.cli import catalog_summary
from kb_assets.errors import InputError
from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import write_recipe
from kb_assets_tests.reliability.conftest import (
    FAST,
    GENES,
    HOSTILE_GENE,
    HOSTILE_SUBJECT,
    bgzip_vcf,
    read_covariates_text,
    rename_sample,
    run_assets,
    snapshot,
    write_covariates_text,
)


def test_names_with_quotes_and_semicolons_round_trip(hostile):
    recipe, _, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    table = warehouse.read_partition("gene_embeddings", "chr1", columns=["subject_id", "gene_name"]).to_pandas()
    assert ((table["subject_id"] == HOSTILE_SUBJECT) & (table["gene_name"] == HOSTILE_GENE)).sum() == 1

    with warehouse.catalog(read_only=True) as catalog:
        def values(sql: str, *parameters) -> list:
            return [row[0] for row in catalog.execute(sql, list(parameters)).fetchall()]

        assert values("select subject_id || '|' || gene_name from gene_embeddings where subject_id = ? "
                      "and gene_name = ?", HOSTILE_SUBJECT, HOSTILE_GENE) == [f"{HOSTILE_SUBJECT}|{HOSTILE_GENE}"]
        assert values("select query from gene_set where gene_name = ?", HOSTILE_GENE) == [HOSTILE_GENE]
        assert values("select subject_id from covariates where subject_id = ?", HOSTILE_SUBJECT) == [HOSTILE_SUBJECT]
        assert values("select count(*) from cv_folds where subject_id = ?", HOSTILE_SUBJECT) == [1]
        assert values("select subject_id from subject_matrix where subject_id = ?", HOSTILE_SUBJECT) == [
            HOSTILE_SUBJECT]
        assert values("select count(distinct fold) from subject_embeddings_pca where subject_id = ?",
                      HOSTILE_SUBJECT) == [recipe.folds.k]
        assert values("select distinct subject_id from subject_haplotypes_assignments where subject_id = ?",
                      HOSTILE_SUBJECT) == [HOSTILE_SUBJECT]
    assert HOSTILE_GENE in warehouse.latest_lineage("subject_matrix")["facts"]["genes"]
    assert dict(catalog_summary(warehouse))["gene_set"] == len(GENES)


# Each broken VCF: (what is wrong, how to make it from the good VCF text, the message it must give).
def _sample_twice(text: str) -> str:
    header = next(line for line in text.split("\n") if line.startswith("#CHROM"))
    other = header.split("\t")[10]
    return rename_sample(text, other, HOSTILE_SUBJECT)


def _contigs_without_chr(text: str) -> str:
    return "\n".join(line.replace("ID=chr", "ID=") if line.startswith("##contig") else
                     line[3:] if line.startswith("chr") else line for line in text.split("\n"))


BROKEN_VCFS = {
    "sample listed twice": (
        _sample_twice,
        "{vcf}: #CHROM header line: sample(s) listed more than once: O'Brien;--\"x in columns 10, 11. Fix: give every "
        "sample one column (e.g. bcftools reheader with unique names)",
    ),
    "contig names differ from the FASTA's": (
        _contigs_without_chr,
        "{vcf}: contig names: the VCF and the FASTA (demo_genome.fa) name contigs differently: the VCF writes '1' "
        "where the FASTA writes 'chr1'. Fix: rename the VCF's contigs to the FASTA's: bcftools annotate "
        "--rename-chrs <old new map> -Oz -W",
    ),
    "truncated bgzip block": (
        None,
        "{vcf}: end of file: the bgzipped VCF is truncated (its last BGZF block is cut short or its end-of-file "
        "block is missing). Fix: download or copy it again, then check its checksum",
    ),
}


@pytest.mark.parametrize("defect", list(BROKEN_VCFS))
def test_a_broken_vcf_fails_its_partition_and_leaves_earlier_outputs_intact(hostile, tmp_path, defect):
    recipe, instance, changes, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse)
    make, expected = BROKEN_VCFS[defect]
    good = gzip.open(changes["vcf"], "rt").read()
    vcf = bgzip_vcf(make(good) if make else good, tmp_path / "broken.vcf.gz")
    if make is None:  # a copy cut short inside a bgzip block, its index intact
        vcf.write_bytes(vcf.read_bytes()[: vcf.stat().st_size * 2 // 3])
    broken = write_recipe(tmp_path / "broken", recipe, GENES, inputs={"vcf": str(vcf)},
                          warehouse={"root": str(warehouse.root)}, **FAST)
    with pytest.raises(InputError) as caught:
        run_assets(broken, instance, "subject_haplotypes", partition="chr1")
    assert str(caught.value) == expected.format(vcf=vcf)
    assert snapshot(warehouse) == before


# Each broken covariates table: (how to make it from the good one, the message it must give).
BROKEN_COVARIATES = {
    "duplicated subject": (
        lambda frame: pd.concat([frame, frame.iloc[[0]]], ignore_index=True),
        "{path}: subject O'Brien;--\"x (rows 1, {n}): subject id appears more than once. Fix: keep exactly one row "
        "per subject",
    ),
    "text in age": (
        lambda frame: frame.assign(age=frame["age"].where(frame.index != 0, "forty")),
        "{path}: row 1 (subject O'Brien;--\"x), column 'age': 'forty' is not a number. Fix: write "
        "covariates.columns.age values as numbers; leave unknown values empty (covariates.missing decides what "
        "happens to them)",
    ),
    "all-missing column": (
        lambda frame: frame.assign(batch=""),
        "{path}: column 'batch': every value is missing ({rows} rows). Fix: fill in the column, or map "
        "covariates.columns.batch to the column that holds it",
    ),
}


@pytest.mark.parametrize("defect", list(BROKEN_COVARIATES))
def test_a_broken_covariates_table_fails_and_leaves_earlier_outputs_intact(hostile, tmp_path, defect):
    recipe, instance, changes, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse)
    make, expected = BROKEN_COVARIATES[defect]
    frame = make(read_covariates_text(Path(changes["covariates"])))
    path = write_covariates_text(frame, tmp_path / "broken.tsv")
    broken = write_recipe(tmp_path / "broken", recipe, GENES, inputs={"covariates": str(path)},
                          warehouse={"root": str(warehouse.root)}, **FAST)
    with pytest.raises(InputError) as caught:
        run_assets(broken, instance, "covariates")
    assert str(caught.value) == expected.format(path=path, n=len(frame), rows=len(frame))
    assert snapshot(warehouse) == before


def test_a_gene_listed_twice_fails_the_gene_set_and_leaves_earlier_outputs_intact(hostile, tmp_path):
    recipe, instance, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse)
    broken = write_recipe(tmp_path / "broken", recipe, [*GENES, HOSTILE_GENE], warehouse={"root": str(warehouse.root)},
                          **FAST)
    with pytest.raises(InputError) as caught:
        run_assets(broken, instance, "gene_set")
    assert str(caught.value) == (f"{broken.inputs.gene_set}: O'DLG4;demo on lines 3 and 6: 1 gene(s) listed twice. "
                                 "Fix: list each gene once")
    assert snapshot(warehouse) == before


def test_windows_line_endings_an_empty_contig_and_iupac_codes_give_the_same_regions(hostile, tmp_path):
    recipe, instance, _, _ = hostile
    fasta = tmp_path / "genome.fa"
    text = recipe.inputs.fasta.read_text()
    assert any(c.islower() for c in text[:100_000])  # the demo genome is soft-masked
    fasta.write_bytes((text + ">empty\n>iupac\nACRYKMswbdhvNn\n").replace("\n", "\r\n").encode())
    windows = write_recipe(tmp_path / "crlf", recipe, GENES, inputs={"fasta": str(fasta)}, **FAST)
    run_assets(windows, instance, "reference_genome", "gene_annotations", "gene_set")
    run_assets(windows, instance, "reference_sequences", partition="chr1")

    contigs = Warehouse(windows.warehouse.root).read_table("reference_genome").to_pandas().set_index("contig")
    assert contigs.loc["empty", "length"] == 0 and contigs.loc["iupac", "length"] == 14
    columns = ["region_id", "sequence"]
    assert (Warehouse(windows.warehouse.root).read_partition("reference_sequences", "chr1", columns)
            == Warehouse(recipe.warehouse.root).read_partition("reference_sequences", "chr1", columns))


RECIPE_DEFECTS = {
    "unknown key": (
        {"encoder": {"poolling": "mean"}},
        "error: {recipe}: encoder.poolling: unknown key: 1 invalid setting(s). Fix: correct the key(s); "
        "data/demo/recipe.yaml lists every key with its allowed values\n",
    ),
    "path that does not exist": (
        {"inputs": {"vcf": "cohort/nowhere.vcf.gz"}},
        "error: {recipe}: inputs.vcf = {folder}/cohort/nowhere.vcf.gz: 1 input path(s) do not exist. Fix: correct "
        "the path(s) in the recipe (relative paths are relative to the recipe file), or run `kb-assets demo init` "
        "for the demo inputs\n",
    ),
}


@pytest.mark.parametrize("defect", list(RECIPE_DEFECTS))
def test_a_broken_recipe_stops_the_cli_with_one_line_and_writes_nothing(demo_recipe, tmp_path, monkeypatch, capsys,
                                                                         defect):
    from kb_assets.cli import main
    from kb_assets.settings import RECIPE_ENV

    change, expected = RECIPE_DEFECTS[defect]
    folder = tmp_path / "recipe"
    write_recipe(folder, demo_recipe, GENES)
    settings = yaml.safe_load((folder / "recipe.yaml").read_text())
    for section, values in change.items():
        settings[section] = {**settings.get(section, {}), **values}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv(RECIPE_ENV, str(demo_recipe.source))  # main() points it at --recipe; restored afterwards
    assert main(["materialize", "--recipe", str(folder / "recipe.yaml")]) == 2
    captured = capsys.readouterr()
    assert captured.err == expected.format(recipe=folder / "recipe.yaml", folder=folder)
    assert not (folder / "warehouse").exists()
