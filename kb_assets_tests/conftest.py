"""Fixtures shared across the suite: the demo inputs (generated once per session into a temporary folder) and
recipes that point at them, each with a warehouse of its own."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml

from kb_assets.cli import materialize_all
from kb_assets.definitions import build_definitions
from kb_assets.demo import generate_demo_inputs
from kb_assets.settings import DEMO_RECIPE, Recipe, load_recipe

# Short genes of every chromosome, chosen for what they exercise: a multi-allelic site (SCN2A_demo), a deletion
# across an exon edge (CHD8_demo), an N run in an exon (DLG4_demo), a MANE-only transcript choice (MECP2_demo).
SMALL_GENE_SET = ["SCN2A_demo", "DLG4_demo", "MECP2_demo", "CHD8_demo"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test models are tiny: a second thread gains nothing, and OpenMP threads stall badly when another
    process holds a core (parallel CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_recipe(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    """The demo recipe with its inputs generated into a temporary copy of the demo folder layout."""
    root = tmp_path_factory.mktemp("demo_inputs")
    (root / "demo").mkdir()
    shutil.copy(DEMO_RECIPE, root / "demo" / "recipe.yaml")
    generate_demo_inputs(load_recipe(root / "demo" / "recipe.yaml", require_inputs=False))
    return load_recipe(root / "demo" / "recipe.yaml")


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def write_recipe(folder: Path, base: Recipe, genes: list[str] | None = SMALL_GENE_SET, **changes: dict) -> Recipe:
    """A recipe file in `folder` on `base`'s inputs (the primary encoder only, no brain table), with a warehouse of
    its own there; `genes` writes a gene-set manifest of its own; `changes` replace recipe sections key by key."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = base.model_dump(mode="json", exclude_none=True)
    # One encoder and no evaluation stage unless a test asks: the demo's Caduceus and brain table cost time.
    settings["inputs"].pop("compare_with", None)
    settings["inputs"].pop("brain", None)
    settings["warehouse"] = {"root": str(folder / "warehouse")}
    if genes is not None:
        manifest = folder / "genes.tsv"
        manifest.write_text("gene\n" + "\n".join(genes) + "\n")
        settings["inputs"]["gene_set"] = str(manifest)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(_merge(settings, changes), sort_keys=False))
    return load_recipe(path)


@pytest.fixture
def make_recipe(demo_recipe: Recipe, tmp_path: Path) -> Callable[..., Recipe]:
    """make_recipe(name, genes=[...], **section_changes): write_recipe into tmp_path/name."""

    def make(name: str = "recipe", genes: list[str] | None = SMALL_GENE_SET, **changes: dict) -> Recipe:
        return write_recipe(tmp_path / name, demo_recipe, genes, **changes)

    return make


def materialize_on(instance: dg.DagsterInstance) -> Callable[..., list[dg.ExecuteInProcessResult]]:
    """materialize(recipe, partitions=None): the whole graph in dependency order, recorded on `instance`."""

    def run(recipe: Recipe, partitions: list[str] | None = None) -> list[dg.ExecuteInProcessResult]:
        return materialize_all(build_definitions(recipe), partitions, instance=instance, log=lambda _: None)

    run.instance = instance
    return run


def materialized_with_own_covariates(folder: Path, demo_recipe: Recipe) -> tuple[Recipe, Callable]:
    """The small gene set (8 components, float32) with a copy of the covariates of its own, which a test may edit,
    materialized once on a fresh ephemeral instance: (recipe, materialize)."""
    covariates = folder / "covariates.tsv"
    covariates.write_text(demo_recipe.inputs.covariates.read_text())
    recipe = write_recipe(folder, demo_recipe, encoder={"dtype": "float32"}, pca={"n_components": 8},
                          inputs={"covariates": str(covariates)})
    materialize = materialize_on(dg.DagsterInstance.ephemeral())
    materialize(recipe)
    return recipe, materialize


@pytest.fixture
def materialize() -> Callable[..., list[dg.ExecuteInProcessResult]]:
    """materialize_on a fresh ephemeral instance per test (so runs of one test see each other's)."""
    return materialize_on(dg.DagsterInstance.ephemeral())
