"""SLURM without Dagster: the sbatch options of a deployment, the sbatch command line, and what SLURM says about
a job once it has ended (scontrol while slurmctld still remembers it, sacct after)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kb_assets.errors import InputError


class SlurmSettings(BaseModel):
    """Where and how a step runs as a SLURM job (a deployment file, e.g. deploy/slurm/slurm.yaml)."""

    model_config = ConfigDict(extra="forbid")

    work_dir: str = Field(description="folder on the shared file system for job scripts, Pipes files and logs")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "04:00:00"
    gres: str | None = "gpu:1"
    cpus_per_task: int = Field(4, ge=1)
    mem: str | None = None
    sbatch_args: list[str] = Field(default_factory=list, description="further sbatch options, passed verbatim")
    python: str = Field(sys.executable, description="the Python of kb_assets' environment, as compute nodes see it")


SETTINGS_ENV = "KB_ASSETS_SLURM"  # the deployment file's path, where steps should run as SLURM jobs


def slurm_settings_from_env() -> SlurmSettings | None:
    """The settings in the file KB_ASSETS_SLURM names, or None when it is unset (steps run in the run's process)."""
    path = os.environ.get(SETTINGS_ENV)
    return load_slurm_settings(path) if path else None


def load_slurm_settings(path: str | Path) -> SlurmSettings:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(path, None, f"cannot read the SLURM settings ({err})", "fix or point at the file") from None
    try:
        return SlurmSettings.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(path, field, first["msg"], "see deploy/slurm/slurm.yaml for the accepted keys") from None


def sbatch_command(settings: SlurmSettings, script: Path, job_name: str, log: Path, chdir: Path) -> list[str]:
    """`sbatch --wait` for `script`: sbatch prints the job id at once (--parsable) and exits when the job ends."""
    options = {"--job-name": job_name, "--output": str(log), "--chdir": str(chdir), "--time": settings.time,
               "--cpus-per-task": str(settings.cpus_per_task), "--gres": settings.gres,
               "--partition": settings.partition, "--account": settings.account, "--qos": settings.qos,
               "--mem": settings.mem}
    return ["sbatch", "--parsable", "--wait",
            *(f"{flag}={value}" for flag, value in options.items() if value is not None),
            *settings.sbatch_args, str(script)]


STATE_HINTS = {
    "CANCELLED": "it was cancelled (scancel, an administrator or preemption)",
    "TIMEOUT": "it reached its time limit: raise `time` in the SLURM settings",
    "OUT_OF_MEMORY": "it ran out of memory: raise `mem` in the SLURM settings",
    "NODE_FAIL": "its node failed: rerun the partition",
    "BOOT_FAIL": "its node failed to boot: rerun the partition",
    "PREEMPTED": "it was preempted: rerun the partition",
    "DEADLINE": "it missed its deadline: rerun the partition",
    "FAILED": "its command exited with an error: see the log",
}


@dataclass(frozen=True)
class SlurmJobRecord:
    job_id: str
    state: str
    exit_code: int
    signal: int
    node: str | None = None
    run_time: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0 and self.signal == 0


def _exit_code(text: str) -> tuple[int, int]:
    code, _, signal = text.partition(":")
    return int(code or 0), int(signal or 0)


def parse_scontrol(text: str) -> SlurmJobRecord | None:
    """The record of `scontrol show job -o <id>` (one line of Key=Value pairs)."""
    fields = dict(re.findall(r"(?:^|\s)(JobId|JobState|ExitCode|NodeList|RunTime)=(\S*)", text))
    if "JobId" not in fields or "JobState" not in fields:
        return None
    code, signal = _exit_code(fields.get("ExitCode", "0:0"))
    return SlurmJobRecord(fields["JobId"], fields["JobState"], code, signal,
                          fields.get("NodeList") or None, fields.get("RunTime"))


def parse_sacct(text: str, job_id: str) -> SlurmJobRecord | None:
    """The allocation's line of `sacct -X -n -P -o JobID,State,ExitCode,NodeList,Elapsed`."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[0] == job_id:
            code, signal = _exit_code(parts[2])
            # sacct writes e.g. "CANCELLED by 1000"; the state is the first word.
            return SlurmJobRecord(job_id, parts[1].split()[0], code, signal, parts[3] or None, parts[4] or None)
    return None


def query_job(job_id: str) -> SlurmJobRecord | None:
    """SLURM's record of a job that has ended, or None when neither slurmctld nor accounting knows it."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    record = parse_scontrol(shown.stdout) if shown.returncode == 0 else None
    if record is None:
        accounted = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o",
                                    "JobID,State,ExitCode,NodeList,Elapsed"], capture_output=True, text=True)
        record = parse_sacct(accounted.stdout, job_id) if accounted.returncode == 0 else None
    return record


class SlurmJobFailed(RuntimeError):
    """A SLURM job ended in any state but COMPLETED with exit code 0."""

    def __init__(self, record: SlurmJobRecord, log: Path | None, log_tail: Sequence[str] = ()):
        self.record = record
        hint = STATE_HINTS.get(record.state, "see the log")
        where = f" on {record.node}" if record.node else ""
        message = (f"SLURM job {record.job_id} ended {record.state}{where} (exit code {record.exit_code}, "
                   f"signal {record.signal}): {hint}; nothing it wrote was published")
        if log is not None:
            message += f". Log: {log}"
        if log_tail:
            message += "\n" + "\n".join(log_tail)
        super().__init__(message)
