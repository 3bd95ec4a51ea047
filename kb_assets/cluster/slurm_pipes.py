"""A Dagster step that runs as a SLURM job, through Dagster Pipes over the cluster's shared file system.

Why not the `dagster-slurm` package: it reaches SLURM only through SSH to a login node (every sbatch, squeue and file
transfer goes over an SSH connection pool) and by default ships a pixi-packed environment. Here the orchestrator runs
on a machine that can submit jobs itself (a login node or a node of the cluster) and compute nodes see the same
installed environment on the shared file system, so Dagster's own Pipes transport over files and `sbatch --wait`
are all that is needed; SLURM does all the scheduling.

Per step: a job folder under `SlurmSettings.work_dir` holds the Pipes context file, the Pipes message file (tailed
by the orchestrator: the job's logs and metadata reach the Dagster event log while the job runs), the batch script
and the SLURM log (tailed too: the job's stdout/stderr become the step's compute log). The job writes its outputs
under a staging folder; they are published onto the warehouse only when SLURM reports COMPLETED with exit code 0.
"""

from __future__ import annotations

import codecs
import re
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

# What Dagster's own Pipes clients (PipesSubprocessClient, dagster-k8s's PipesK8sClient) subclass to be resources.
from dagster._core.definitions.resource_annotation import TreatAsResourceParam

from kb_assets.cluster.slurm import (
    SlurmJobFailed,
    SlurmJobRecord,
    SlurmSettings,
    query_job,
    sbatch_command,
)
from kb_assets.cluster.staging import STAGING_EXTRA, StagedOutputs

LOG_TAIL_LINES = 30
LOG_POLL_S = 1.0


def job_entry_command(settings: SlurmSettings, target: str, *args: str) -> list[str]:
    """The command that runs `target` ("module:function", called as function(pipes, *args)) on the job side."""
    return [settings.python, "-m", "kb_assets.cluster.job_entry", target, *args]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class SlurmPipesClient(dg.PipesClient, TreatAsResourceParam):
    """Runs one step's command as one SLURM job (sbatch options from `settings`) and reports it as the step.
    A resource as it is (like `dagster.PipesSubprocessClient`): ``resources={"slurm": SlurmPipesClient(settings)}``."""

    def __init__(self, settings: SlurmSettings):
        self.settings = settings

    def run(  # type: ignore[override]  # PipesClient.run takes implementation-specific keywords
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: Sequence[str],
        extras: Mapping | None = None,
        publish_to: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        job_name: str | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Submit `command` with `sbatch --wait` and wait for it. With `publish_to` (the warehouse root) the job
        gets a staging folder there (`staging_dir(pipes)` on the job side) whose files replace their counterparts
        under `publish_to` only after SLURM reports success; on any failure they are discarded. Raises
        `dagster.Failure` naming the job id and its state when the job does not complete."""
        partition = context.partition_key if context.has_partition_key else "all"
        step = context.op_def.name
        invocation = _safe(f"{context.run.run_id[:8]}-{step}-{partition}-{uuid.uuid4().hex[:8]}")
        job_dir = Path(self.settings.work_dir) / invocation
        job_dir.mkdir(parents=True)
        job_name = job_name or _safe(f"kb_assets-{step}-{partition}")
        staged = StagedOutputs(publish_to, invocation) if publish_to is not None else None
        extras = dict(extras or {})
        if staged is not None:
            extras[STAGING_EXTRA] = str(staged.create())
        try:
            with dg.open_pipes_session(
                context=context,
                context_injector=dg.PipesFileContextInjector(str(job_dir / "context.json")),
                # The job's stdout/stderr come from the SLURM log instead (_forward_log): it also holds what SLURM
                # and the shell say before Python starts, and Pipes' own stdio capture reports after "closed".
                message_reader=dg.PipesFileMessageReader(str(job_dir / "messages.jsonl")),
                extras=extras,
            ) as session:
                script = _write_script(job_dir, command, {**session.get_bootstrap_env_vars(), **(env or {})})
                record, log = self._submit_and_wait(context, script, job_name, job_dir)
            # Raised after the session closed, so every message the job sent is in the event log first.
            if not record.succeeded:
                error = SlurmJobFailed(record, log, _log_tail(log))
                raise dg.Failure(description=str(error), metadata={
                    "slurm_job_id": record.job_id, "slurm_state": record.state,
                    "slurm_exit_code": record.exit_code, "slurm_log": str(log),
                }) from error
        except BaseException:
            if staged is not None:
                staged.discard()
            raise
        published = staged.commit() if staged is not None else []
        shutil.rmtree(job_dir, ignore_errors=True)  # its log is in the step's compute log
        return dg.PipesClientCompletedInvocation(session, metadata={
            "slurm_job_id": record.job_id,
            "slurm_job_name": job_name,
            "slurm_state": record.state,
            "slurm_node": record.node or "",
            "slurm_run_time": record.run_time or "",
            "published_files": len(published),
        })

    def _submit_and_wait(self, context, script: Path, job_name: str, job_dir: Path) -> tuple[SlurmJobRecord, Path]:
        argv = sbatch_command(self.settings, script, job_name, job_dir / "slurm-%j.out", chdir=Path.cwd())
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_line = process.stdout.readline().strip()
        job_id = first_line.split(";")[0]  # --parsable: "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            _, stderr = process.communicate()
            reason = f"{first_line} {stderr}".strip()
            raise dg.Failure(description=f"sbatch refused the job {job_name}: {reason}. Fix the SLURM settings "
                                         f"(partition, account, gres, time ...). Command: {shlex.join(argv)}")
        log = job_dir / f"slurm-{job_id}.out"
        context.log.info(f"SLURM job {job_id} submitted ({job_name}); log {log}")
        job_ended = threading.Event()
        forwarder = threading.Thread(target=_forward_log, args=(log, job_ended), daemon=True)
        forwarder.start()
        try:
            process.communicate()
        except BaseException:
            # The step was interrupted (run terminated): the job must not outlive it.
            subprocess.run(["scancel", job_id], capture_output=True)
            process.kill()
            raise
        finally:
            job_ended.set()
            forwarder.join(timeout=LOG_POLL_S * 5)
        record = query_job(job_id) or SlurmJobRecord(job_id, "UNKNOWN", process.returncode, 0)
        context.log.info(f"SLURM job {job_id} ended {record.state} (exit code {record.exit_code})")
        return record, log


def _forward_log(log: Path, job_ended: threading.Event) -> None:
    """Copy the SLURM log to this process's stdout as it grows: Dagster captures that as the step's compute log, so
    the job's output shows in the UI while it runs. (A file tail is all it takes; Pipes' log readers target blob
    stores.)"""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    position = 0
    while True:
        ended = job_ended.is_set()  # read once more after the job ended: its last lines
        try:
            with open(log, "rb") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
        if ended:
            return
        job_ended.wait(LOG_POLL_S)


def _write_script(job_dir: Path, command: Sequence[str], env: Mapping[str, str]) -> Path:
    """The batch script: the Pipes bootstrap variables exported explicitly (sites that set --export=NONE still
    pass them), then `exec` so that scancel's signal reaches the command itself."""
    lines = ["#!/bin/bash", *(f"export {name}={shlex.quote(value)}" for name, value in env.items()),
             f"exec {shlex.join(command)}"]
    script = job_dir / "job.sh"
    script.write_text("\n".join(lines) + "\n")
    return script

