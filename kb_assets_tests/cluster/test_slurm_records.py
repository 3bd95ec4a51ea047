"""SLURM without a cluster: the sbatch command line, the deployment file, and the records of ended jobs (as
scontrol and sacct of slurm-wlm 22.05 print them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_assets.cluster.slurm import (
    SETTINGS_ENV,
    SlurmJobFailed,
    SlurmSettings,
    load_slurm_settings,
    parse_sacct,
    parse_scontrol,
    sbatch_command,
    slurm_settings_from_env,
)
from kb_assets.errors import InputError

DEPLOY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "slurm.yaml"

SCONTROL_CANCELLED = (
    "JobId=4 JobName=kb_assets-gene_embeddings-chr2 UserId=ana(1000) GroupId=ana(1000) MCS_label=N/A "
    "Priority=4294901757 Nice=0 Account=lab QOS=normal JobState=CANCELLED Reason=None Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:04 TimeLimit=04:00:00 NodeList=gpu07 "
    "Command=/shared/kb/jobs/x/job.sh WorkDir=/shared/kb TresPerNode=gres:gpu:1"
)


def test_scontrol_records():
    record = parse_scontrol(SCONTROL_CANCELLED)
    assert (record.job_id, record.state, record.exit_code, record.signal, record.node, record.run_time) == (
        "4", "CANCELLED", 0, 15, "gpu07", "00:00:04")
    assert not record.succeeded
    completed = parse_scontrol(SCONTROL_CANCELLED.replace("JobState=CANCELLED", "JobState=COMPLETED")
                               .replace("ExitCode=0:15", "ExitCode=0:0"))
    assert completed.succeeded
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None


def test_sacct_records():
    text = "7|CANCELLED by 1000|0:15|gpu07|00:01:02\n8|TIMEOUT|0:0|gpu03|04:00:11\n9|FAILED|3:0|gpu01|00:00:02\n"
    assert parse_sacct(text, "7").state == "CANCELLED"
    timeout = parse_sacct(text, "8")
    assert (timeout.state, timeout.exit_code, timeout.succeeded) == ("TIMEOUT", 0, False)
    failed = parse_sacct(text, "9")
    assert (failed.exit_code, failed.node, failed.run_time) == (3, "gpu01", "00:00:02")
    assert parse_sacct(text, "10") is None


@pytest.mark.parametrize("state, hint", [("TIMEOUT", "raise `time`"), ("OUT_OF_MEMORY", "raise `mem`"),
                                         ("NODE_FAIL", "node failed"), ("CANCELLED", "cancelled")])
def test_failures_name_the_job_its_state_and_the_fix(state, hint, tmp_path: Path):
    record = parse_scontrol(SCONTROL_CANCELLED.replace("JobState=CANCELLED", f"JobState={state}"))
    message = str(SlurmJobFailed(record, tmp_path / "slurm-4.out", ["last line"]))
    assert f"SLURM job 4 ended {state} on gpu07" in message and hint in message
    assert str(tmp_path / "slurm-4.out") in message and message.endswith("last line")


def test_sbatch_command_carries_the_settings(tmp_path: Path):
    settings = SlurmSettings(work_dir=str(tmp_path), partition="gpu", account="lab", time="02:00:00",
                             mem="64G", sbatch_args=["--constraint=a100"])
    argv = sbatch_command(settings, tmp_path / "job.sh", "kb_assets-gene_embeddings-chr1", tmp_path / "slurm-%j.out",
                          chdir=tmp_path)
    assert argv[:3] == ["sbatch", "--parsable", "--wait"] and argv[-1] == str(tmp_path / "job.sh")
    assert {"--partition=gpu", "--account=lab", "--time=02:00:00", "--mem=64G", "--gres=gpu:1",
            "--cpus-per-task=4", "--constraint=a100", "--job-name=kb_assets-gene_embeddings-chr1"} <= set(argv)
    assert not any(a.startswith(("--qos", "--mem=None")) for a in argv)  # unset options are left to the site


def test_the_example_deployment_file_loads(monkeypatch):
    settings = load_slurm_settings(DEPLOY_FILE)
    assert settings.gres == "gpu:1" and settings.work_dir.startswith("/")
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    assert slurm_settings_from_env() is None
    monkeypatch.setenv(SETTINGS_ENV, str(DEPLOY_FILE))
    assert slurm_settings_from_env() == settings


def test_a_bad_deployment_file_names_the_key(tmp_path: Path):
    path = tmp_path / "slurm.yaml"
    path.write_text("work_dir: /shared/kb\ncpus_per_tasks: 8\n")
    with pytest.raises(InputError, match=r"slurm.yaml: cpus_per_tasks: Extra inputs are not permitted"):
        load_slurm_settings(path)
