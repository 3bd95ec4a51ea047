"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd of the Debian packages (slurm-wlm, munge),
started in a folder of their own with a config of their own, as the current user, in a few seconds.

The node advertises two fake GPUs (gres files that are plain files), so jobs request `--gres=gpu:1` as in
production. Finished jobs are logged by jobcomp/filetxt: SLURM's own record of what ran and how it ended.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMON_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
COMMANDS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo")
DAEMONS = ("munged", "slurmctld", "slurmd")
START_TIMEOUT_S = 30


def missing_binaries() -> list[str]:
    return [name for name in COMMANDS + DAEMONS if shutil.which(name, path=DAEMON_PATH) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int = 2, gpus: int = 2):
        self.folder = folder
        self.cpus = cpus
        self.gpus = gpus
        self.conf = folder / "slurm.conf"
        self.jobcomp = folder / "jobcomp.log"
        self.node = socket.gethostname().split(".")[0]
        self._pid_files = {name: folder / f"{name}.pid" for name in DAEMONS}

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        f, user = self.folder, getpass.getuser()
        (f / "state").mkdir()
        (f / "spool").mkdir()
        key = f / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        gpu_files = [f / f"fakegpu{i}" for i in range(self.gpus)]
        for g in gpu_files:
            g.touch()
        (f / "gres.conf").write_text("".join(f"NodeName={self.node} Name=gpu File={g}\n" for g in gpu_files))
        self.conf.write_text(f"""\
ClusterName=kbtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={f / "munge.socket"}
CredType=cred/munge
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool"}
SlurmctldPidFile={self._pid_files["slurmctld"]}
SlurmdPidFile={self._pid_files["slurmd"]}
SlurmctldLogFile={f / "slurmctld.log"}
SlurmdLogFile={f / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MinJobAge=600
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _daemon(self, name: str, *args: str) -> None:
        binary = shutil.which(name, path=DAEMON_PATH)
        result = subprocess.run([binary, *args], capture_output=True, text=True, env={**os.environ, **self.env})
        if result.returncode != 0:
            raise RuntimeError(f"{name} did not start ({result.returncode}): {result.stderr.strip()}\n{self.logs()}")

    def start(self) -> LocalSlurm:
        self._write_config()
        f = self.folder
        self._daemon("munged", f"--key-file={f / 'munge.key'}", f"--socket={f / 'munge.socket'}",
                     f"--pid-file={self._pid_files['munged']}", f"--log-file={f / 'munged.log'}",
                     f"--seed-file={f / 'munged.seed'}", "--force")
        self._daemon("slurmctld", "-f", str(self.conf))
        self._daemon("slurmd", "-f", str(self.conf))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                   env={**os.environ, **self.env}).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the local SLURM node did not become idle in {START_TIMEOUT_S} s\n{self.logs()}")

    def stop(self) -> None:
        for name in reversed(DAEMONS):
            try:
                pid = int(self._pid_files[name].read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name} (last lines)\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def finished_jobs(self) -> dict[str, dict[str, str]]:
        """jobcomp's record of every finished job, by job id: JobState, Name, Tres, ExitCode ..."""
        jobs = {}
        if self.jobcomp.exists():
            for line in self.jobcomp.read_text().splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                jobs[fields["JobId"]] = fields
        return jobs
