"""Job-side functions for the SLURM tests, run by `python -m kb_assets.cluster.job_entry <module>:<function>`."""

from __future__ import annotations

import os
import time

from dagster_pipes import PipesContext

from kb_assets.cluster.job_entry import staging_dir


def _write_staged(pipes: PipesContext) -> str:
    job_id = os.environ["SLURM_JOB_ID"]
    out = staging_dir(pipes) / "probe" / f"{pipes.partition_key}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{pipes.partition_key} written by SLURM job {job_id}\n")
    return job_id


def write_probe(pipes: PipesContext) -> None:
    job_id = _write_staged(pipes)
    print(f"stdout of the probe for {pipes.partition_key}", flush=True)
    pipes.log.info(f"probe {pipes.partition_key} running as SLURM job {job_id}")
    pipes.report_asset_materialization(metadata={"job_side_slurm_job_id": job_id, "rows": 1})


def write_then_wait(pipes: PipesContext) -> None:
    """Stages its output, then waits for the test to scancel it."""
    job_id = _write_staged(pipes)
    pipes.log.info(f"probe {pipes.partition_key} staged by SLURM job {job_id}; waiting")
    time.sleep(600)


def fail_loudly(pipes: PipesContext) -> None:
    _write_staged(pipes)
    raise ValueError(f"probe {pipes.partition_key} fails on purpose")
