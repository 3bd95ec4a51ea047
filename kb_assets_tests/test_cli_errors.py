"""Bad input stops `kb-assets` with one message, once, as the last line, without Dagster's step and run failure
traces (`--verbose` adds the traceback); recipe mistakes get the nearest valid key; a missing input of one's own
recipe is not answered with the demo's `kb-assets demo init`."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pysam
import pytest
import yaml

from kb_assets.cli import main
from kb_assets.settings import PROJECT_ROOT, RECIPE_ENV
from kb_assets_tests.conftest import write_recipe

FAST = {"encoder": {"dtype": "float32"}, "pca": {"n_components": 8}}


def _kb_assets(*args: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    """The CLI in a fresh process with DAGSTER_HOME unset, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "kb_assets.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _assert_one_clean_error(result: subprocess.CompletedProcess, expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert result.stderr.rstrip("\n").splitlines()[-1] == f"error: {expected}"
    assert output.count(expected) == 1, output[-3000:]
    for noise in ("Traceback", "Stack Trace", "STEP_FAILURE", "RUN_FAILURE", "dagster - ERROR"):
        assert noise not in output, output[-3000:]


@pytest.fixture
def unknown_gene_recipe(demo_recipe, tmp_path):
    """A recipe whose gene set, a plain list without header, names a gene the annotation lacks on line 4."""
    recipe = write_recipe(tmp_path / "mine", demo_recipe, **FAST)
    recipe.inputs.gene_set.write_text("# my genes, one per line\nSCN2A_demo\nDLG4_demo\nNOPE_demo\nCHD8_demo\n")
    return recipe


def test_a_gene_missing_from_the_annotation_is_one_line_naming_its_file_line(unknown_gene_recipe):
    recipe = unknown_gene_recipe
    result = _kb_assets("materialize", "--recipe", str(recipe.source))
    _assert_one_clean_error(result, (
        f"{recipe.inputs.gene_set}: 1 not in GENCODE v0: NOPE_demo (line 4 of genes.tsv): gene-set entries do "
        "not each resolve to exactly one annotation gene. Fix: correct or remove the entries named; use Ensembl "
        "gene ids (version optional) where a symbol is ambiguous or has changed"))
    assert "materializing reference_genome, gene_annotations, gene_set (unpartitioned)" in result.stdout


def test_verbose_adds_the_traceback_and_still_ends_with_the_error(unknown_gene_recipe):
    result = _kb_assets("materialize", "--verbose", "--recipe", str(unknown_gene_recipe.source))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "kb_assets/genome/gene_set.py" in result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1].startswith("error: ")
    assert "NOPE_demo (line 4 of genes.tsv)" in result.stderr.rstrip("\n").splitlines()[-1]


def _wrong_build(vcf_text: str) -> str:
    """Every chr1 SNV's REF replaced by another base, as a VCF of another build reads at these positions."""
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}
    lines = []
    for line in vcf_text.split("\n"):
        fields = line.split("\t")
        if line.startswith("chr1\t") and len(fields[3]) == 1 and fields[3] in other:
            replacement = other[fields[3]]
            alts = fields[4].split(",")
            fields[3] = replacement if replacement not in alts else other[replacement]
        lines.append("\t".join(fields))
    return "\n".join(lines)


def test_a_vcf_of_another_build_is_one_line(demo_recipe, tmp_path):
    plain = tmp_path / "other_build.vcf"
    plain.write_text(_wrong_build(gzip.open(demo_recipe.inputs.vcf, "rt").read()))
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    vcf = tmp_path / "other_build.vcf.gz"
    recipe = write_recipe(tmp_path / "mine", demo_recipe, inputs={"vcf": str(vcf)}, **FAST)
    result = _kb_assets("materialize", "--partition", "chr1", "--recipe", str(recipe.source))
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"error: {vcf}: ") and "the VCF and the FASTA are probably of different genome builds" \
        in last, result.stderr[-3000:]
    _assert_one_clean_error(result, last.removeprefix("error: "))


@pytest.mark.parametrize(("section", "typo", "nearest"), [
    ("encoder", {"poolng": "mean"}, "encoder.poolng: unknown key (did you mean `pooling`?)"),
    (None, {"pcaa": {"n_components": 8}}, "pcaa: unknown key (did you mean `pca`?)"),
    ("covariates", {"columns": {"agee": "age"}}, "covariates.columns.agee: unknown key (did you mean `age`?)"),
    ("folds", {"zzz": 1}, "folds.zzz: unknown key (valid keys: k, seed)"),
])
def test_an_unknown_key_suggests_the_nearest_valid_one(demo_recipe, tmp_path, monkeypatch, capsys, section, typo,
                                                        nearest):
    recipe = write_recipe(tmp_path / "mine", demo_recipe)
    settings = yaml.safe_load(recipe.source.read_text())
    if section is None:
        settings.update(typo)
    else:
        settings[section] = {**settings.get(section, {}), **typo}
    recipe.source.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv(RECIPE_ENV, str(demo_recipe.source))  # main() points it at --recipe; restored afterwards
    assert main(["materialize", "--recipe", str(recipe.source)]) == 2
    assert capsys.readouterr().err == (
        f"error: {recipe.source}: {nearest}: 1 invalid setting(s). Fix: correct the key(s); `kb-assets recipe new "
        "PATH` writes a recipe listing every key with its allowed values\n")


def test_a_missing_input_suggests_demo_init_only_for_the_demo_recipe(demo_recipe, tmp_path, monkeypatch, capsys):
    import kb_assets.settings

    recipe = write_recipe(tmp_path / "mine", demo_recipe)
    settings = yaml.safe_load(recipe.source.read_text())
    settings["inputs"]["vcf"] = "cohort/nowhere.vcf.gz"
    recipe.source.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv(RECIPE_ENV, str(demo_recipe.source))
    assert main(["materialize", "--recipe", str(recipe.source)]) == 2
    own = capsys.readouterr().err
    assert own == (f"error: {recipe.source}: inputs.vcf = {tmp_path}/mine/cohort/nowhere.vcf.gz: 1 input path(s) do "
                   "not exist. Fix: correct the path(s) in the recipe (relative paths are relative to the recipe "
                   "file)\n")
    monkeypatch.setattr(kb_assets.settings, "DEMO_RECIPE", recipe.source)  # as if it were the demo recipe
    assert main(["materialize", "--recipe", str(recipe.source)]) == 2
    assert capsys.readouterr().err == own.replace("file)\n", "file), or run `kb-assets demo init` for the demo "
                                                             "inputs\n")
