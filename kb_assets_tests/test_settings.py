"""Recipes: validated on load, one clear error naming the recipe, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kb_assets.errors import InputError
from kb_assets.settings import DEMO_RECIPE, load_recipe


def _write(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _minimal(tmp_path: Path) -> dict:
    for name in ("genome.fa", "genes.gtf", "genes.tsv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "model").mkdir(exist_ok=True)
    return {"recipe_id": "r1", "inputs": {"fasta": "genome.fa", "gtf": "genes.gtf", "gene_set": "genes.tsv",
                                          "checkpoint": "model"}}


def test_demo_recipe_is_valid_and_lists_its_chromosomes():
    recipe = load_recipe(DEMO_RECIPE, require_inputs=False)
    assert recipe.recipe_id == "genetics_gene_fm_pca512_v1"
    assert recipe.reference.chromosomes == ["chr1", "chr2", "chrX"]
    assert recipe.inputs.fasta == DEMO_RECIPE.parent / "genome" / "demo_genome.fa"


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    recipe = load_recipe(_write(tmp_path, _minimal(tmp_path)))
    assert recipe.inputs.fasta == tmp_path / "genome.fa"
    assert recipe.reference.chromosomes[0] == "chr1" and recipe.reference.chromosomes[-1] == "chrM"
    assert recipe.warehouse.root == tmp_path / "warehouse"


def test_unknown_key_is_named(tmp_path):
    settings = _minimal(tmp_path) | {"encoder": {"poolling": "mean"}}
    with pytest.raises(InputError, match=r"recipe.yaml: encoder.poolling: unknown key.*Fix: correct the key"):
        load_recipe(_write(tmp_path, settings))


def test_bad_value_is_named(tmp_path):
    settings = _minimal(tmp_path) | {"encoder": {"rc": "sometimes"}}
    with pytest.raises(InputError, match=r"encoder.rc: Input should be 'average' or 'none'"):
        load_recipe(_write(tmp_path, settings))


def test_every_missing_input_is_listed(tmp_path):
    settings = _minimal(tmp_path)
    settings["inputs"]["fasta"] = "nowhere.fa"
    settings["inputs"]["vcf"] = "cohort/none.vcf.gz"
    with pytest.raises(InputError, match=r"inputs.fasta = .*nowhere.fa; inputs.vcf = .*none.vcf.gz: 2 input path"):
        load_recipe(_write(tmp_path, settings))
    assert load_recipe(_write(tmp_path, settings), require_inputs=False).inputs.fasta.name == "nowhere.fa"


def test_window_overlap_must_leave_room(tmp_path):
    settings = _minimal(tmp_path) | {"encoder": {"window_tokens": 64, "window_overlap": 62}}
    with pytest.raises(InputError, match=r"window_overlap \(62\) must be below window_tokens - 2"):
        load_recipe(_write(tmp_path, settings))


def test_unreadable_recipe_says_where(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("recipe_id: r1\ninputs: [unclosed\n")
    with pytest.raises(InputError, match=r"recipe.yaml: line 3: not valid YAML"):
        load_recipe(path)
    with pytest.raises(InputError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_duplicated_chromosome_is_refused(tmp_path):
    settings = _minimal(tmp_path) | {"reference": {"chromosomes": ["chr1", "chr2", "chr1"]}}
    with pytest.raises(InputError, match="reference.chromosomes: Value error, listed more than once: chr1"):
        load_recipe(_write(tmp_path, settings))


def test_ensembl_chromosome_numbers_are_names(tmp_path):
    # YAML reads [1, 2, X] as two numbers and a letter: Ensembl's names, as the contig-name error suggests them.
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_minimal(tmp_path)) + "reference:\n  chromosomes: [1, 2, X, MT]\n")
    assert load_recipe(path).reference.chromosomes == ["1", "2", "X", "MT"]


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_a_brain_table_needs_concatenated_genes(tmp_path, mode):
    (tmp_path / "brain.tsv").write_text("x")
    settings = _minimal(tmp_path) | {"aggregation": {"genes_to_subject": mode}}
    settings["inputs"]["brain"] = "brain.tsv"
    with pytest.raises(InputError, match=rf"recipe.yaml: aggregation.genes_to_subject: {mode} cannot be evaluated "
                                         r"against inputs.brain .*set aggregation.genes_to_subject: concat"):
        load_recipe(_write(tmp_path, settings))
    del settings["inputs"]["brain"]
    assert load_recipe(_write(tmp_path, settings)).aggregation.genes_to_subject == mode


def test_attribution_permutations_cannot_exceed_the_null(tmp_path):
    settings = _minimal(tmp_path) | {"evaluation": {"n_permutations": 10, "attribution_permutations": 20}}
    with pytest.raises(InputError, match=r"evaluation: Value error, attribution_permutations \(20\) exceeds "
                                         r"n_permutations \(10\); set it to at most n_permutations"):
        load_recipe(_write(tmp_path, settings))


def test_fingerprint_follows_the_named_sections(tmp_path):
    base = load_recipe(_write(tmp_path, _minimal(tmp_path)))
    changed = load_recipe(_write(tmp_path, _minimal(tmp_path) | {"encoder": {"pooling": "cls"}}))
    assert base.fingerprint("encoder") != changed.fingerprint("encoder")
    assert base.fingerprint("regions") == changed.fingerprint("regions")
