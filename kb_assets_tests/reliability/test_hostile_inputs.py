"""Hostile and broken inputs at the asset level: names with quotes and semicolons round-trip through parquet and the
DuckDB catalog unchanged, and a broken VCF or covariates file fails its asset with one clear message while every
earlier output stays byte-identical. (Each parser's own messages are tested in genome/, stats/ and test_settings.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kb_assets.cli import catalog_summary
from kb_assets.errors import InputError
from kb_assets.storage import Warehouse, quote_identifier
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

# Views that must name the hostile subject (subject_id) and gene (gene_name) at least: the derived gene_embeddings
# view, and the tables of every stage. Any other view with such a column is checked too.
NAMED_IN_AT_LEAST = {
    "subject_id": {"covariates", "cv_folds", "subject_haplotypes_subjects", "gene_embeddings_subjects",
                   "gene_embeddings", "subject_matrix", "subject_embeddings_pca"},
    "gene_name": {"gene_annotations_genes", "gene_set", "reference_sequences", "gene_embeddings_vectors",
                  "gene_embeddings", "subject_matrix_genes"},
}
HOSTILE = {"subject_id": HOSTILE_SUBJECT, "gene_name": HOSTILE_GENE}
LEFT_OUT_VIEWS = {"covariates_left_out"}  # subjects left out of the analysis: the hostile subject is analysed


def test_names_with_quotes_and_semicolons_round_trip(hostile):
    recipe, _, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    # Parquet: the files that hold names hold them unchanged.
    assert HOSTILE_SUBJECT in warehouse.read_partition("gene_embeddings/subjects", "chr1").column(
        "subject_id").to_pylist()
    assert HOSTILE_GENE in warehouse.read_partition("gene_embeddings/vectors", "chr1").column("gene_name").to_pylist()
    assert HOSTILE_SUBJECT in warehouse.read_table("subject_matrix").column("subject_id").to_pylist()
    assert HOSTILE_GENE in warehouse.read_table("subject_matrix/genes").column("gene_name").to_pylist()
    # ... and so do the facts written into the files (read directly, and through the catalog's facts view).
    assert HOSTILE_GENE in warehouse.read_facts("subject_matrix")["genes"]

    with warehouse.catalog(read_only=True) as catalog:
        def values(sql: str, *parameters) -> list:
            return [row[0] for row in catalog.execute(sql, list(parameters)).fetchall()]

        named = {column: set(values("select table_name from duckdb_columns() where column_name = ? and not internal",
                                    column)) for column in HOSTILE}
        for column, views in NAMED_IN_AT_LEAST.items():
            assert views <= named[column], f"views without a {column} column: {views - named[column]}"
        missing = [f"{view}.{column}" for column, views in named.items() for view in sorted(views - LEFT_OUT_VIEWS)
                   if values(f"select count(*) from {quote_identifier(view)} where {quote_identifier(column)} = ?",
                             HOSTILE[column]) == [0]]
        assert missing == [], f"views that lost {HOSTILE_SUBJECT} or {HOSTILE_GENE}: {missing}"

        # The derived view gives the hostile subject's vector of the hostile gene exactly once: the vector of the
        # code it carries (or the reference's, code 0), as read from the three parquet files here.
        derived = values("select vector from gene_embeddings where subject_id = ? and gene_name = ?",
                         HOSTILE_SUBJECT, HOSTILE_GENE)
        [genes] = values("select facts->'genes' from facts where file_name like ?", "%/subject_matrix/data.parquet")
        assert HOSTILE_GENE in json.loads(genes)
    subjects = warehouse.read_partition("gene_embeddings/subjects", "chr1").to_pandas()
    vectors = warehouse.read_partition("gene_embeddings/vectors", "chr1").to_pandas()
    assignments = warehouse.read_partition("gene_embeddings/assignments", "chr1").to_pandas()
    [index] = subjects.loc[subjects["subject_id"] == HOSTILE_SUBJECT, "subject_index"]
    [gene_order] = vectors.loc[(vectors["gene_name"] == HOSTILE_GENE) & (vectors["code"] == 0), "gene_order"]
    carried = assignments.loc[(assignments["subject_index"] == index) & (assignments["gene_order"] == gene_order),
                              "code"].tolist()
    [expected] = vectors.loc[(vectors["gene_order"] == gene_order) & (vectors["code"] == (carried or [0])[0]),
                             "vector"]
    assert len(derived) == 1 and derived[0] == list(expected)
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
        "where the FASTA writes 'chr1'. Fix: rename the VCF's contigs to the FASTA's: printf '1 chr1\\n' > map.txt "
        "&& bcftools annotate --rename-chrs map.txt -Oz -W -o renamed.vcf.gz broken.vcf.gz",
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
    before = snapshot(warehouse, instance)
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
    assert snapshot(warehouse, instance) == before


# Each broken covariates table: (how to make it from the good one, the message it must give).
BROKEN_COVARIATES = {
    "duplicated subject": (
        lambda frame: pd.concat([frame, frame.iloc[[0]]], ignore_index=True),
        "{path}: subject O'Brien;--\"x on lines 2 and {last_line} of broken.tsv: subject id appears more than once. "
        "Fix: keep exactly one row per subject",
    ),
    "text in age": (
        lambda frame: frame.assign(age=frame["age"].where(frame.index != 0, "forty")),
        "{path}: line 2 of broken.tsv (subject O'Brien;--\"x), column 'age': 'forty' is not a number. Fix: write "
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
    before = snapshot(warehouse, instance)
    make, expected = BROKEN_COVARIATES[defect]
    frame = make(read_covariates_text(Path(changes["covariates"])))
    path = write_covariates_text(frame, tmp_path / "broken.tsv")
    broken = write_recipe(tmp_path / "broken", recipe, GENES, inputs={"covariates": str(path)},
                          warehouse={"root": str(warehouse.root)}, **FAST)
    with pytest.raises(InputError) as caught:
        run_assets(broken, instance, "covariates")
    assert str(caught.value) == expected.format(path=path, last_line=len(frame) + 1, rows=len(frame))
    assert snapshot(warehouse, instance) == before


def test_a_gene_listed_twice_fails_the_gene_set_and_leaves_earlier_outputs_intact(hostile, tmp_path):
    recipe, instance, _, _ = hostile
    warehouse = Warehouse(recipe.warehouse.root)
    before = snapshot(warehouse, instance)
    broken = write_recipe(tmp_path / "broken", recipe, [*GENES, HOSTILE_GENE], warehouse={"root": str(warehouse.root)},
                          **FAST)
    with pytest.raises(InputError) as caught:
        run_assets(broken, instance, "gene_set")
    assert str(caught.value) == (f"{broken.inputs.gene_set}: O'DLG4;demo on lines 3 and 6: 1 gene(s) listed twice. "
                                 "Fix: list each gene once")
    assert snapshot(warehouse, instance) == before


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
        "error: {recipe}: encoder.poolling: unknown key (did you mean `pooling`?): 1 invalid setting(s). Fix: "
        "correct the key(s); `kb-assets recipe new PATH` writes a recipe listing every key with its allowed values\n",
    ),
    "path that does not exist": (
        {"inputs": {"vcf": "cohort/nowhere.vcf.gz"}},
        "error: {recipe}: inputs.vcf = {folder}/cohort/nowhere.vcf.gz: 1 input path(s) do not exist. Fix: correct "
        "the path(s) in the recipe (relative paths are relative to the recipe file)\n",
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
