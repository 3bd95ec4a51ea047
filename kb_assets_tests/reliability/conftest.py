"""Helpers of the reliability tests: separate processes that run kb_assets the way a cluster job would."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from kb_assets.settings import PROJECT_ROOT

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
    import dagster as dg

    from kb_assets.definitions import build_definitions

    job = build_definitions(recipe).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(name) for name in assets], partition_key=partition, instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
