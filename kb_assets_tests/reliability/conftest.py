"""Helpers of the reliability tests: child processes that run kb_assets the way a cluster job would, inputs with
hostile names, and a snapshot of everything a warehouse holds and Dagster recorded."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pysam
import pytest

from kb_assets.cli import materialize_all
from kb_assets.definitions import build_definitions
from kb_assets.encoders.chromosome import DATASETS as GENE_EMBEDDING_FILES
from kb_assets.settings import PROJECT_ROOT
from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import SMALL_GENE_SET, write_recipe

# Two chromosomes are enough to have "the other partition"; the genes lie on chr1 and chr2 only.
TWO_CHROMOSOME_GENES = ["SCN2A_demo", "DLG4_demo", "CHD8_demo"]
TWO_CHROMOSOMES = {"reference": {"chromosomes": ["chr1", "chr2"]}}
FAST = {"encoder": {"dtype": "float32"}, "pca": {"n_components": 8}}


def dagster_home(folder: Path) -> Path:
    """A DAGSTER_HOME like the project's data/ (same dagster.yaml: pools, no telemetry), empty otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "data" / "dagster.yaml", folder / "dagster.yaml")
    return folder


def child_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process: this interpreter's packages and the repository on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return env


def console_script(name: str) -> list[str]:
    """The installed console script beside this interpreter (`kb-assets`), as a user runs it."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable}")
    return [str(script)]


def run_assets(recipe, instance, *assets: str, partition: str | None = None):
    """Materialize the named assets (one partition of them) in one run, as `dagster asset materialize` would;
    an asset's error is raised as itself."""
    job = build_definitions(recipe).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(name) for name in assets], partition_key=partition, instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )


def partition_bytes(warehouse: Warehouse, chrom: str) -> dict[str, bytes]:
    """The bytes of the four files of a gene_embeddings partition, by dataset."""
    return {name: warehouse.partition_file(name, chrom).read_bytes() for name in GENE_EMBEDDING_FILES}


def partition_facts(warehouse: Warehouse, chrom: str) -> dict[str, dict]:
    """The facts written into each of the four files of a gene_embeddings partition, by dataset."""
    return {name: warehouse.read_facts(name, chrom) for name in GENE_EMBEDDING_FILES}


def one_fact(warehouse: Warehouse, chrom: str, key: str):
    """A fact of a gene_embeddings partition, which its four files must agree on."""
    values = {str(facts.get(key)) for facts in partition_facts(warehouse, chrom).values()}
    assert len(values) == 1, f"the files of gene_embeddings[{chrom}] disagree on {key}: {values}"
    return warehouse.read_facts(GENE_EMBEDDING_FILES[0], chrom)[key]


HOSTILE_SUBJECT = "O'Brien;--\"x"
HOSTILE_GENE = "O'DLG4;demo"  # GTF values cannot hold a double quote; ' and ; are what a gene name may carry
GENES = [HOSTILE_GENE if gene == "DLG4_demo" else gene for gene in SMALL_GENE_SET]


def bgzip_vcf(text: str, path: Path) -> Path:
    """Bgzip and index VCF text as path (…vcf.gz)."""
    plain = path.with_suffix("")
    plain.write_text(text)
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return path


def rename_sample(vcf_text: str, old: str, new: str) -> str:
    lines = vcf_text.split("\n")
    header = next(i for i, line in enumerate(lines) if line.startswith("#CHROM"))
    lines[header] = "\t".join(new if field == old else field for field in lines[header].split("\t"))
    return "\n".join(lines)


def read_covariates_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def write_covariates_text(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="session")
def hostile(demo_recipe, tmp_path_factory):
    """The small gene set's graph, materialized on inputs where one subject is named O'Brien;--"x and DLG4_demo is
    named O'DLG4;demo: the VCF sample, the covariates row, the GTF's gene and the gene-set line."""
    folder = tmp_path_factory.mktemp("hostile")
    inputs = demo_recipe.inputs
    vcf_text = gzip.open(inputs.vcf, "rt").read()
    covariates = read_covariates_text(inputs.covariates)
    renamed = covariates["subject_id"].iloc[0]
    assert f"\t{renamed}\t" in vcf_text
    vcf = bgzip_vcf(rename_sample(vcf_text, renamed, HOSTILE_SUBJECT), folder / "cohort.vcf.gz")
    covariates.loc[0, "subject_id"] = HOSTILE_SUBJECT
    covariate_file = write_covariates_text(covariates, folder / "covariates.tsv")
    gtf = folder / "annotation.gtf"
    gtf.write_text(gzip.open(inputs.gtf, "rt").read().replace("DLG4_demo", HOSTILE_GENE))

    changes = {"vcf": str(vcf), "covariates": str(covariate_file), "gtf": str(gtf)}
    recipe = write_recipe(folder / "run", demo_recipe, GENES, inputs=changes, **FAST)
    instance = dg.DagsterInstance.ephemeral()
    # The whole graph: every chromosome partition, then the cohort and diagnostic assets.
    materialize_all(build_definitions(recipe), None, instance=instance, log=lambda _: None)
    return recipe, instance, changes, folder


def snapshot(warehouse: Warehouse, instance: dg.DagsterInstance | None = None) -> dict:
    """Everything a failed run must leave as it was: every warehouse file's sha256 (temporaries included, so a
    leftover shows), the facts the catalog's `facts` view reads from the files, and the materializations Dagster
    recorded on `instance` (asset, partition, event id)."""
    files = {str(p.relative_to(warehouse.root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(warehouse.root.rglob("*")) if p.is_file() and not p.name.startswith("catalog.duckdb")}
    with warehouse.catalog(read_only=True) as catalog:
        facts = catalog.execute("select file_name, facts::varchar from facts order by file_name").fetchall()
    materializations = sorted(
        (key.to_user_string(), record.partition_key, record.storage_id)
        for key in (instance.get_asset_keys() if instance is not None else [])
        for record in instance.fetch_materializations(key, limit=10_000).records
    )
    return {"files": files, "facts": facts, "materializations": materializations}
