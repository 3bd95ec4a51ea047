"""The job side of a step that runs elsewhere (a SLURM job): opens Dagster Pipes and calls a Python function.

    python -m kb_assets.cluster.job_entry package.module:function [ARG ...]

calls ``function(pipes, *ARGS)`` inside ``open_dagster_pipes()``: the Pipes context (partition key, extras) comes
from, and messages go to, the files on the shared file system that the orchestrator's client named in the
environment. The function logs with ``pipes.log``, reports with ``pipes.report_asset_materialization`` and writes
its outputs under ``staging_dir(pipes)`` only. An exception is reported to Dagster and ends the job with an error.
Imports dagster_pipes only (no Dagster instance, no DuckDB catalog on this side).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dagster_pipes import PipesContext, open_dagster_pipes

from kb_assets.cluster.staging import STAGING_EXTRA


def staging_dir(pipes: PipesContext) -> Path:
    """The folder this job writes its outputs to: warehouse-shaped, published by the orchestrator on success."""
    value = pipes.extras.get(STAGING_EXTRA)
    if not value:
        raise RuntimeError("this step was launched without a staging folder (SlurmPipesClient.run's publish_to); "
                           "it has nowhere to write")
    return Path(value)


def resolve(target: str) -> Callable[..., object]:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:function, got {target!r}")
    function = getattr(importlib.import_module(module_name), attribute)
    if not callable(function):
        raise TypeError(f"{target} is not callable")
    return function


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb_assets.cluster.job_entry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="module:function, called as function(pipes, *args)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="string arguments for the function")
    args = parser.parse_args(argv)
    with open_dagster_pipes() as pipes:
        resolve(args.target)(pipes, *args.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
