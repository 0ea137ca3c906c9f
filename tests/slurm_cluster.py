"""A throwaway one-node SLURM cluster on localhost for the SLURM integration tests.

Debian's ``slurmctld``, ``slurmd`` and ``munge`` (``apt-get install slurmctld slurmd slurm-client
munge``; ``.ci/run`` does it) run as root under a temporary directory, without systemd or cgroups:
a private munge key and socket, a generated ``slurm.conf`` sized from ``slurmd -C``, and short
credential / scheduler intervals so a requeued job restarts within seconds. :func:`why_unavailable`
says why such a cluster cannot start here (the tests skip with that reason).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "munged", "mungekey")


def why_unavailable() -> Optional[str]:
    """``None`` when a local cluster can be started, otherwise the reason it cannot."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "SLURM needs a POSIX system"
    if os.geteuid() != 0:
        return "the local SLURM daemons must run as root (slurmd) and this is not root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge"
    return None


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` is what clients need."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "etc" / "slurm.conf"
        self.env: Dict[str, str] = dict(os.environ, SLURM_CONF=str(self.conf))
        self.cpus = 0

    # -------------------------------------------------------------------------------------------
    def _run(self, args: List[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()} {proc.stdout.strip()}")
        return proc

    def start(self, timeout: float = 60) -> "LocalSlurm":
        for sub in ("etc", "state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o755)  # munged refuses a socket directory without o+x
        key = munge / "munge.key"
        if not key.exists():
            self._run(["mungekey", "-c", "-k", str(key), "-b", "1024"])
        self._run(["munged", f"--key-file={key}", f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                   f"--seed-file={munge / 'munged.seed'}", f"--log-file={self.root / 'log' / 'munged.log'}"])
        hw = self._run(["slurmd", "-C"]).stdout
        self.cpus = int(re.search(r"\bCPUs=(\d+)", hw).group(1))
        memory = max(int(re.search(r"RealMemory=(\d+)", hw).group(1)) - 512, 256)
        self.conf.write_text(self._config(memory))
        self._run(["slurmctld", "-f", str(self.conf)])
        self._run(["slurmd", "-f", str(self.conf), "-N", "localhost"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self._run(["sinfo", "-h", "-o", "%t"], check=False).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-1500:] for p in (self.root / "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"the local SLURM node did not become idle in {timeout:.0f} s:\n{logs}")

    def _config(self, memory: int) -> str:
        r = self.root
        return f"""ClusterName=mmrtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'},cred_expire=5
MailProg=/bin/true
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
EnforcePartLimits=ALL
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
ReturnToService=2
InactiveLimit=0
KillWait=10
MinJobAge=600
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def stop(self) -> None:
        ids = self._run(["squeue", "-h", "-o", "%i"], check=False).stdout.split() if self.conf.exists() else []
        if ids:
            self._run(["scancel", "--full", *ids], check=False)
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munge" / "munged.pid"):
            if not pid_file.exists() or not pid_file.read_text().strip():
                continue
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(40):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.25)

    # -------------------------------------------------------------------------------------------
    def sbatch(self, script: Path | str, args: List[str] = (), options: List[str] = (), env: Optional[Dict[str, str]] = None,
               cwd: Optional[Path] = None) -> str:
        """Submit ``script`` (with ``options`` before it, ``args`` after); returns the job id."""
        job_env = dict(self.env, **(env or {}))
        proc = subprocess.run(["sbatch", "--parsable", *options, str(script), *args], env=job_env, capture_output=True, text=True,
                              timeout=60, cwd=cwd)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...); {} once it is gone."""
        out = self._run(["scontrol", "show", "job", "-o", job_id], check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, timeout: float) -> Dict[str, str]:
        """Wait until the job has finished (a requeued job is followed to its end)."""
        deadline = time.time() + timeout
        info: Dict[str, str] = {}
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"):
                return info
            time.sleep(1)
        self._run(["scancel", job_id], check=False)
        raise TimeoutError(f"SLURM job {job_id} did not finish in {timeout:.0f} s (last state {info.get('JobState')})")
