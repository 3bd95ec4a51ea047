"""`kb-assets materialize` on two recipes, one after the other, as a user runs it (DAGSTER_HOME unset): each recipe
gets its own Dagster history, so neither's automation acts on the other's runs and neither's warehouse is written
by the other's runs; every run is tagged with its recipe; the run summary says who was analysed and how many
components each fold kept and why. Then `kb-assets sql` on the result."""

from __future__ import annotations

import builtins
import contextlib
import gzip
import io
import re
from pathlib import Path

import cyvcf2
import dagster as dg
import numpy as np
import pandas as pd
import pysam
import pytest
from filelock import FileLock

from kb_assets.cli import dagster_home, main
from kb_assets.definitions import build_definitions
from kb_assets.settings import RECIPE_ENV, RECIPE_ID_TAG, RECIPE_PATH_TAG
from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import SMALL_GENE_SET, write_recipe

pytestmark = pytest.mark.slow

FAST = {"encoder": {"dtype": "float32"}}


@pytest.fixture(autouse=True)
def restore_recipe_env(monkeypatch):
    """main() points $KB_ASSETS_RECIPE at --recipe for the definitions it loads; put it back afterwards."""
    monkeypatch.delenv(RECIPE_ENV, raising=False)


def _materialize(recipe, *extra: str) -> str:
    """`kb-assets materialize --recipe …` in this process; its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["materialize", "--recipe", str(recipe.source), *extra]) == 0
    return out.getvalue()


def _automation(recipe, instance, cursor=None):
    return dg.evaluate_automation_conditions(defs=build_definitions(recipe), instance=instance, cursor=cursor)


def _requested_builds(recipe, evaluated) -> set[str]:
    """The materializations an automation evaluation requested (the input files' observations, requested every
    minute whatever happened, aside)."""
    graph = build_definitions(recipe).resolve_asset_graph()
    return {key.to_user_string() for key in graph.materializable_asset_keys if evaluated.get_num_requested(key)}


def _written_paths(recipe, instance) -> set[Path]:
    """The files every materialization in `instance` says it wrote (its `path` metadata)."""
    paths = set()
    for key in build_definitions(recipe).resolve_asset_graph().materializable_asset_keys:
        for record in instance.fetch_materializations(key, limit=1000).records:
            if "path" in record.asset_materialization.metadata:
                paths.add(Path(record.asset_materialization.metadata["path"].value))
    return paths


@pytest.fixture(scope="module")
def two_recipes(demo_recipe, tmp_path_factory):
    """Recipe A (8 components) then recipe B (CLS pooling, 512 components: rank-limited), each materialized by the
    CLI with DAGSTER_HOME unset; A's automation is evaluated once between the two, as its sensor would tick."""
    root = tmp_path_factory.mktemp("two_recipes")
    a = write_recipe(root / "a", demo_recipe, **FAST, pca={"n_components": 8})
    b = write_recipe(root / "b", demo_recipe, recipe_id="recipe_b", encoder={"dtype": "float32", "pooling": "cls"},
                     pca={"n_components": 512})
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.setenv(RECIPE_ENV, str(demo_recipe.source))  # main() points it at --recipe; restored afterwards
        out_a = _materialize(a)
        with dg.DagsterInstance.from_config(str(dagster_home(a))) as instance:
            cursor_a = _automation(a, instance).cursor
        out_b = _materialize(b)
        yield {"a": a, "b": b, "out_a": out_a, "out_b": out_b, "cursor_a": cursor_a}


def test_each_recipe_has_its_own_dagster_history(two_recipes):
    a, b = two_recipes["a"], two_recipes["b"]
    assert dagster_home(a) == a.warehouse.root / "dagster" and dagster_home(b) == b.warehouse.root / "dagster"
    with dg.DagsterInstance.from_config(str(dagster_home(a))) as instance_a, \
            dg.DagsterInstance.from_config(str(dagster_home(b))) as instance_b:
        runs_a = {run.run_id: run for run in instance_a.get_runs()}
        runs_b = {run.run_id: run for run in instance_b.get_runs()}
        # Automation sees only its own recipe: B's new embeddings request nothing for A, B is current itself.
        assert _requested_builds(a, _automation(a, instance_a, two_recipes["cursor_a"])) == set()
        assert _requested_builds(b, _automation(b, instance_b)) == set()
        # Each warehouse was written by its own recipe's runs only.
        written_a, written_b = _written_paths(a, instance_a), _written_paths(b, instance_b)
    assert written_a and all(path.is_relative_to(a.warehouse.root) for path in written_a)
    assert written_b and all(path.is_relative_to(b.warehouse.root) for path in written_b)
    for recipe, runs, out in ((a, runs_a, two_recipes["out_a"]), (b, runs_b, two_recipes["out_b"])):
        printed = set(re.findall(r"done in [\d.]+ s, run (\S+)", out))
        assert len(printed) == 5 and printed <= set(runs)  # unpartitioned, chr1, chr2, chrX, downstream
        assert {(run.tags[RECIPE_ID_TAG], run.tags[RECIPE_PATH_TAG]) for run in runs.values()} == {
            (recipe.recipe_id, str(recipe.source))}


def test_a_shared_dagster_home_is_respected_and_then_automation_crosses_recipes(two_recipes, demo_recipe, tmp_path,
                                                                                 monkeypatch):
    """An explicit DAGSTER_HOME is used as it is. Shared by two recipes, it shows why each recipe has its own by
    default: the other recipe's new embeddings make this one's automation request runs on its unchanged data."""
    shared = tmp_path / "shared_home"
    monkeypatch.setenv("DAGSTER_HOME", str(shared))
    monkeypatch.setenv(RECIPE_ENV, str(demo_recipe.source))
    c = write_recipe(tmp_path / "c", demo_recipe, **FAST, pca={"n_components": 8})
    d = write_recipe(tmp_path / "d", demo_recipe, recipe_id="recipe_d", encoder={"dtype": "float32",
                                                                               "pooling": "cls"})
    _materialize(c)
    with dg.DagsterInstance.from_config(str(shared)) as instance:
        cursor = _automation(c, instance).cursor
    _materialize(d, "--partition", "chr2")
    assert dagster_home(c) == shared and not (c.warehouse.root / "dagster").exists()
    with dg.DagsterInstance.from_config(str(shared)) as instance:
        assert {run.tags[RECIPE_ID_TAG] for run in instance.get_runs()} == {c.recipe_id, "recipe_d"}
        assert "subject_matrix" in _requested_builds(c, _automation(c, instance, cursor))


def test_the_summary_counts_the_subjects_left_out(two_recipes):
    a = two_recipes["a"]
    vcf = set(cyvcf2.VCF(str(a.inputs.vcf)).samples)
    table = set(pd.read_csv(a.inputs.covariates, sep="\t", dtype={"subject_id": str})["subject_id"])
    assert vcf - table and table - vcf  # the demo cohort has subjects on one side only
    expected = (f"Subjects: {len(vcf & table)} analysed; left out: {len(vcf - table)} in the VCF without "
                f"covariates, {len(table - vcf)} in the covariates table without genotypes, 0 with missing "
                "covariate values (covariates.missing)")
    assert expected in two_recipes["out_a"].splitlines()


def test_the_summary_says_how_many_components_each_fold_kept_and_why(two_recipes):
    """Recipe B asks for 512 components, more than any fold can hold. Each fold's line gives the number of
    components its scores have (read from the scores table) and the limit; where that is the subjects, the number
    is the training subjects minus the rank of the covariate design, recomputed here as the SVD rank of a one-hot
    design built from the covariates table."""
    b = two_recipes["b"]
    with Warehouse(b.warehouse.root).catalog(read_only=True) as connection:
        covariates = connection.execute("select * from covariates").df().set_index("subject_id")
        folds = connection.execute("select subject_id, fold from cv_folds").df()
        subjects = [row[0] for row in connection.execute("select subject_id from subject_matrix").fetchall()]
        kept = dict(connection.execute(
            "select fold, any_value(n_components) from subject_embeddings_pca group by fold").fetchall())
    folds = folds[folds["subject_id"].isin(subjects)]
    pcs = [c for c in covariates.columns if re.fullmatch(r"pc\d+", c)]
    lines = [line.strip() for line in two_recipes["out_b"].splitlines()]
    limits = ("training subjects − design rank", "non-constant features", "distinct gene vectors", "numerical rank")
    assert sorted(kept) == sorted(folds["fold"].unique())
    for fold, n in kept.items():
        line = next(line for line in lines if line.startswith(f"fold {fold}: "))
        match = re.fullmatch(rf"fold {fold}: {n} of 512 components \(limited by (?P<limit>.+)\)", line)
        assert match and match["limit"] in limits, line
        if match["limit"] == limits[0]:
            train = covariates.loc[folds.loc[folds["fold"] != fold, "subject_id"]]
            design = pd.concat([pd.Series(1.0, index=train.index), train[["age", *pcs]],
                                pd.get_dummies(train[["sex", "batch"]].astype(str), drop_first=True)], axis=1)
            assert n == len(train) - np.linalg.matrix_rank(design.to_numpy(dtype=float)), line
    for line in two_recipes["out_a"].splitlines():
        if line.startswith("  fold "):
            assert re.fullmatch(r"  fold \d: 8 of 8 components \(as requested\)", line), line


def test_sql_prints_a_query_result_as_a_table(two_recipes, capsys):
    a = two_recipes["a"]
    assert main(["sql", "--recipe", str(a.source), "select gene_name from gene_set order by gene_order"]) == 0
    out = capsys.readouterr().out
    assert [gene for gene in SMALL_GENE_SET if gene in out] == SMALL_GENE_SET
    assert out.index(SMALL_GENE_SET[0]) < out.index(SMALL_GENE_SET[-1])


def test_sql_is_read_only_and_a_bad_query_is_one_error(two_recipes, capsys):
    a = two_recipes["a"]
    assert main(["sql", "--recipe", str(a.source), "create table scratch (x int)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: create table scratch (x int): ") and err.count("\n") == 1
    assert "read-only" in err
    assert main(["sql", "--recipe", str(a.source), "select * from no_such_view"]) == 2
    assert "no_such_view" in capsys.readouterr().err
    with Warehouse(a.warehouse.root).catalog(read_only=True) as connection:
        assert connection.execute("select count(*) from duckdb_tables() where table_name = 'scratch'").fetchone() == (
            0,)


def test_sql_prompt_holds_the_catalog_only_while_a_statement_runs(two_recipes, capsys, monkeypatch, tmp_path):
    a = two_recipes["a"]
    monkeypatch.setenv("HOME", str(tmp_path))  # the prompt's readline history file
    lock = FileLock(str(Warehouse(a.warehouse.root).catalog_path) + ".lock", timeout=0)
    lines = iter(["select count(*) as n_genes", "from gene_set;", ".tables", "select nonsense;", ".quit"])

    def typed(_prompt: str) -> str:
        with lock:  # raises Timeout if the prompt were holding the catalog between statements
            pass
        return next(lines)

    monkeypatch.setattr(builtins, "input", typed)
    assert main(["sql", "--recipe", str(a.source)]) == 0
    captured = capsys.readouterr()
    assert "n_genes" in captured.out and re.search(rf"│\s+{len(SMALL_GENE_SET)}\s+│", captured.out)
    assert re.search(r"^  gene_set +4 rows$", captured.out, re.MULTILINE)
    assert captured.err.startswith("error: ") and "nonsense" in captured.err
    assert (tmp_path / ".kb_assets_sql_history").exists()


def test_a_second_materialize_runs_only_what_changed(demo_recipe, tmp_path, monkeypatch):
    """Dagster's own staleness decides: nothing changed, nothing runs; another pooling re-runs the embedding chain
    and what follows it, never the reference, haplotype or covariate stages."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    recipe = write_recipe(tmp_path / "again", demo_recipe, genes=["CHD8_demo", "SCN2A_demo"], **FAST)
    _materialize(recipe)
    second = _materialize(recipe)
    assert "everything is up to date" in second and "materializing" not in second
    assert "0 runs" in second
    recipe = write_recipe(tmp_path / "again", demo_recipe, genes=["CHD8_demo", "SCN2A_demo"],
                          encoder={"dtype": "float32", "pooling": "max"})
    third = _materialize(recipe)
    ran = {name for line in re.findall(r"^materializing (.*) \(", third, re.MULTILINE) for name in line.split(", ")}
    assert {"gene_embeddings", "subject_matrix", "subject_embeddings_pca"} <= ran
    assert not ran & {"reference_genome", "gene_set", "reference_sequences", "subject_haplotypes", "covariates",
                      "cv_folds"}
    everything = _materialize(recipe, "--all")
    assert "subject_haplotypes" in everything and "covariates" in everything

    # A gene added on chrX: every partition's reference sequences are asked again (the gene set feeds them all),
    # but only chrX's come out changed, so only chrX's chain runs after them.
    recipe = write_recipe(tmp_path / "again", demo_recipe, genes=["CHD8_demo", "SCN2A_demo", "MECP2_demo"],
                          encoder={"dtype": "float32", "pooling": "max"})
    ran_in = _ran_by_partition(_materialize(recipe))
    assert ran_in["partition chr1"] == ran_in["partition chr2"] == {"reference_sequences"}
    assert ran_in["partition chrX"] == {"reference_sequences", "subject_haplotypes", "tokenized_genes",
                                        "gene_embeddings"}
    assert {"gene_set", "subject_matrix", "subject_embeddings_pca"} <= ran_in["unpartitioned"]

    # One genotype changed on chr1, where the gene set has no gene: the VCF feeds every partition's haplotypes and
    # the covariates (its subject list), which all run again and come out as they were (the VCF's new sha256 is
    # provenance, not data), so nothing after them runs.
    vcf = _with_one_genotype_changed(demo_recipe.inputs.vcf, "chr1", tmp_path / "edited.vcf.gz")
    recipe = write_recipe(tmp_path / "again", demo_recipe, genes=["CHD8_demo", "SCN2A_demo", "MECP2_demo"],
                          encoder={"dtype": "float32", "pooling": "max"}, inputs={"vcf": str(vcf)})
    ran_in = _ran_by_partition(_materialize(recipe))
    assert ran_in == {f"partition {chrom}": {"subject_haplotypes"} for chrom in ("chr1", "chr2", "chrX")} | {
        "unpartitioned": {"covariates"}}


def _with_one_genotype_changed(vcf: Path, chrom: str, path: Path) -> Path:
    """A copy of `vcf` (bgzipped, indexed) whose first record on `chrom` has its first subject's genotype swapped
    between 0|0 and 0|1."""
    lines = gzip.open(vcf, "rt").read().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{chrom}\t"))
    fields = lines[index].split("\t")
    fields[9] = "0|1" if fields[9] == "0|0" else "0|0"
    lines[index] = "\t".join(fields)
    plain = path.with_suffix("")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def _ran_by_partition(output: str) -> dict[str, set[str]]:
    """What a `materialize` output says it ran: {"partition chr1" | "unpartitioned": asset names}."""
    ran: dict[str, set[str]] = {}
    for names, label in re.findall(r"^materializing (.*) \((.*)\)$", output, re.MULTILINE):
        ran.setdefault(label, set()).update(names.split(", "))
    return ran
