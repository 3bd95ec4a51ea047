"""Helpers of the reliability tests: child processes that run kb_assets the way a cluster job would, inputs with
hostile names, and a snapshot of everything a warehouse holds."""

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


HOSTILE_SUBJECT = "O'Brien;--\"x"
HOSTILE_GENE = "O'DLG4;demo"  # GTF values cannot hold a double quote; ' and ; are what a gene name may carry
GENES = [HOSTILE_GENE if gene == "DLG4_demo" else gene for gene in SMALL_GENE_SET]
COHORT_ASSETS = ("covariates", "cv_folds", "subject_matrix", "subject_embeddings_pca")


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
    materialize_all(build_definitions(recipe), recipe.reference.chromosomes, instance=instance, log=lambda _: None)
    run_assets(recipe, instance, *COHORT_ASSETS)
    return recipe, instance, changes, folder


def snapshot(warehouse: Warehouse) -> dict:
    """Every output file's sha256 (temporaries included, so a leftover shows) and the lineage rows."""
    files = {str(p.relative_to(warehouse.root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(warehouse.root.rglob("*")) if p.is_file() and not p.name.startswith("catalog.duckdb")}
    with warehouse.catalog(read_only=True) as catalog:
        lineage = catalog.execute("select asset, partition, run_id from lineage order by all").fetchall()
    return {"files": files, "lineage": lineage}
