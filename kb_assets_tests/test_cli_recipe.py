"""`kb-assets recipe new PATH`: a recipe with absolute paths (the demo inputs unless given), a warehouse of its own,
and every key under a comment generated from the settings models (description, allowed values, default)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from kb_assets.cli import input_paths, main
from kb_assets.settings import DEMO_RECIPE, PRIMARY_ASSEMBLY, RECIPE_ENV, EvaluationSettings, Recipe, load_recipe

KEY = re.compile(r"^(?P<indent> *)(?P<key>\w+):(?P<value>.*)$")


@pytest.fixture(autouse=True)
def restore_recipe_env(monkeypatch):
    """main() points $KB_ASSETS_RECIPE at --recipe for the definitions it loads; put it back afterwards."""
    monkeypatch.delenv(RECIPE_ENV, raising=False)


def _fields(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every settings field of the recipe models by dotted name (sections included)."""
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        found[prefix + name] = field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= _fields(field.annotation, f"{prefix}{name}.")
    return found


def _keys_with_comments(text: str) -> dict[str, str]:
    """Dotted key → the comment line right above it ('' when there is none), from a written recipe."""
    keys, path, previous = {}, [], ""
    for line in text.splitlines():
        match = KEY.match(line)
        if match:
            depth = len(match["indent"]) // 2
            path = path[:depth] + [match["key"]]
            keys[".".join(path)] = previous.strip().removeprefix("# ") if previous.strip().startswith("#") else ""
        previous = line
    return keys


def test_every_setting_has_a_description():
    """The generated recipe explains each key with its field's description: a new setting needs one."""
    leaves = {name: field for name, field in _fields(Recipe).items()
              if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))}
    assert [name for name, field in leaves.items() if not field.description] == []


def test_a_new_recipe_points_at_the_demo_inputs_with_absolute_paths(tmp_path, capsys):
    path = tmp_path / "studies" / "my_recipe.yaml"
    assert main(["recipe", "new", str(path)]) == 0
    assert f"next: kb-assets materialize --recipe {path}" in capsys.readouterr().out
    recipe = load_recipe(path, require_inputs=False)
    demo = load_recipe(DEMO_RECIPE, require_inputs=False)
    assert recipe.recipe_id == "my_recipe"
    assert recipe.inputs == demo.inputs
    assert recipe.warehouse.root == path.parent / "warehouse"  # its own warehouse and Dagster history
    paths = {**input_paths(recipe), "warehouse.root": recipe.warehouse.root}
    assert {"fasta", "gtf", "gene_set", "vcf", "covariates", "checkpoint"} <= set(paths)
    for name, value in paths.items():
        assert value.is_absolute(), name
        written = re.search(rf"^ *{name.split('.')[-1]}: (.*)$", path.read_text(), re.MULTILINE)[1]
        assert written == str(value)
    for section in ("reference", "regions", "encoder", "aggregation", "haplotypes", "covariates", "folds", "pca",
                    "schedule"):
        assert getattr(recipe, section) == getattr(demo, section), section


def test_every_key_of_the_models_is_written_under_its_comment(tmp_path):
    path = tmp_path / "r.yaml"
    assert main(["recipe", "new", str(path)]) == 0
    keys = _keys_with_comments(path.read_text())
    fields = _fields(Recipe)
    # A mapping's entries (the demo's encoder to compare) sit under the mapping's own key and comment.
    entries = {key for key in keys if key.startswith("inputs.compare_with.")}
    assert entries == {"inputs.compare_with.caduceus_ps"}
    assert set(keys) - entries == set(fields)
    for name, field in fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        assert keys[name].startswith(field.description), name
    assert keys["regions.mode"].endswith("one of: exons | gene_body | cds | promoter; default: exons")
    assert keys["encoder.tokenizer_sha256"].endswith("default: null")
    assert keys["inputs.fasta"].endswith("required")


def test_given_inputs_replace_the_demo_ones_and_a_new_genome_resets_the_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "real.yaml"
    assert main(["recipe", "new", str(path), "--fasta", "hg38.fa", "--gene-set", "~/genes.txt",
                 "--recipe-id", "asd_exomes_v1", "--warehouse", "out"]) == 0
    recipe = load_recipe(path, require_inputs=False)
    assert recipe.recipe_id == "asd_exomes_v1"
    assert recipe.inputs.fasta == tmp_path / "hg38.fa"
    assert recipe.inputs.gene_set == Path.home() / "genes.txt"
    assert recipe.inputs.gtf == load_recipe(DEMO_RECIPE, require_inputs=False).inputs.gtf
    assert recipe.warehouse.root == tmp_path / "out"
    assert recipe.reference.build == "hg38" and recipe.reference.chromosomes == PRIMARY_ASSEMBLY


def test_a_new_genome_gives_the_primary_chromosomes_it_holds_under_its_own_naming(tmp_path, capsys):
    fasta = tmp_path / "ensembl.fa"
    fasta.write_text("".join(f">{name}\nACGTACGT\n" for name in ("1", "2", "X", "MT", "KI270706.1")))
    path = tmp_path / "ensembl.yaml"
    assert main(["recipe", "new", str(path), "--fasta", str(fasta)]) == 0
    assert "chromosomes (one partition each): 1, 2, X, MT" in capsys.readouterr().out
    assert load_recipe(path, require_inputs=False).reference.chromosomes == ["1", "2", "X", "MT"]


def test_a_new_cohort_drops_the_demo_brain_table_and_its_small_evaluation_settings(tmp_path):
    demo = load_recipe(DEMO_RECIPE, require_inputs=False)
    assert demo.evaluation != EvaluationSettings()  # the demo's few permutations and components
    for flag in ("--vcf", "--covariates", "--checkpoint", "--brain"):
        path = tmp_path / f"{flag[2:]}.yaml"
        assert main(["recipe", "new", str(path), flag, str(tmp_path / "given")]) == 0
        recipe = load_recipe(path, require_inputs=False)
        assert recipe.inputs.brain == (tmp_path / "given" if flag == "--brain" else None), flag
        assert recipe.evaluation == EvaluationSettings(), flag  # so each value is the default its comment names
    genome_only = tmp_path / "genome.yaml"
    assert main(["recipe", "new", str(genome_only), "--fasta", str(tmp_path / "hg38.fa")]) == 0
    assert load_recipe(genome_only, require_inputs=False).evaluation == demo.evaluation


def test_a_new_checkpoint_drops_the_demo_comparison_and_brain_table_unless_given(tmp_path):
    plain = tmp_path / "plain.yaml"
    assert main(["recipe", "new", str(plain), "--checkpoint", "dnabert2"]) == 0
    recipe = load_recipe(plain, require_inputs=False)
    assert recipe.inputs.checkpoint == tmp_path.cwd() / "dnabert2"
    assert recipe.inputs.compare_with == {} and recipe.inputs.brain is None
    both = tmp_path / "both.yaml"
    assert main(["recipe", "new", str(both), "--checkpoint", str(tmp_path / "dnabert2"), "--brain",
                 str(tmp_path / "idps.tsv"), "--compare-with", f"caduceus_ps={tmp_path / 'ps'}"]) == 0
    recipe = load_recipe(both, require_inputs=False)
    assert recipe.inputs.compare_with == {"caduceus_ps": tmp_path / "ps"}
    assert recipe.inputs.brain == tmp_path / "idps.tsv"


def test_an_existing_file_is_kept_unless_forced(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("mine\n")
    assert main(["recipe", "new", str(path)]) == 2
    assert capsys.readouterr().err == (f"error: {path}: the file exists. Fix: choose another path, or pass --force "
                                       "to replace it\n")
    assert path.read_text() == "mine\n"
    assert main(["recipe", "new", str(path), "--force"]) == 0
    assert load_recipe(path, require_inputs=False).recipe_id == "r"


@pytest.mark.parametrize("command", [["sql", "select 1"], ["report"]])
def test_commands_on_a_recipe_never_materialized_say_so(tmp_path, capsys, command):
    path = tmp_path / "fresh.yaml"
    assert main(["recipe", "new", str(path)]) == 0
    capsys.readouterr()
    code = main([command[0], "--recipe", str(path), *command[1:]])
    if command[0] == "sql":
        assert code == 2
        assert capsys.readouterr().err == (
            f"error: {tmp_path}/warehouse/catalog.duckdb: no catalog yet. Fix: materialize the recipe first: "
            f"kb-assets materialize --recipe {path}\n")
    else:
        assert code == 0  # an empty report: nothing materialized yet, said on the page
        assert "Nothing audited yet" in (tmp_path / "warehouse" / "report.html").read_text()
