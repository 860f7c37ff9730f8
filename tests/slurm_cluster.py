"""A real Slurm on this machine: munged, slurmctld and one slurmd per network namespace (needs root)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from timing import wait_for

from coordinator.bench.netlab.hosts import Network

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "munged")
# Daemons must not carry the test's tag: they outlive single tests, and the no-orphan
# check would count them. Jobs get the tag back from the sbatch environment they export.
_UNTAGGED = {k: v for k, v in os.environ.items() if k != "DNI_TEST_TAG"}

SLURM_CONF = """\
ClusterName=dnitest
SlurmctldHost={hostname}({controller})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
# No cgroups in a namespace on this machine: track processes by their parent pids.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# A cancelled job gets this long between SIGTERM and SIGKILL: time for a checkpoint of a
# small test network (clusters usually keep the default, 30 s). A cancelled job also stays
# COMPLETING for about this long, so shorter makes the tests quicker.
KillWait=15
# `sbatch --wait` polls a job 2 s after submitting it, then at an interval that grows 4x while it is under
# half of MinJobAge: 8 s, then 32 s at the default, 300 (a 10-second job took 42 s to be seen done). 6 holds
# it at 8 s (a 5-second job seen done after 10 s), and keeps a finished job's record 6 s.
MinJobAge=6
SlurmdTimeout=30
MessageTimeout=10
{nodes}
# Every node has the machine's 2 cores; let all jobs share them.
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
"""


class SlurmError(RuntimeError):
    """The cluster could not be installed, brought up or torn down."""


def install() -> None:
    """The distribution's packages, if a binary is missing (root only: apt-get)."""
    if all(shutil.which(b) or os.access(f"/usr/sbin/{b}", os.X_OK) for b in BINARIES):
        return
    env = {**_UNTAGGED, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(apt, env=env, capture_output=True).returncode:
        # Package lists may be stale or absent on a fresh machine: refresh once and retry.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(apt, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise SlurmError(f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr[-2000:]}")


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    """`with Cluster(4, tmp) as c:` gives a controller namespace and nodes node0..node3.

    Clients (sbatch, scontrol) run in the controller's namespace through `c.client()`.
    Daemons are started with nsenter, which enters only the network namespace: `ip netns
    exec` remounts /sys, and slurmd then finds no cgroup filesystem and refuses to start.
    """

    def __init__(self, nodes: int, workdir: Path):
        self.n, self.dir = nodes, Path(workdir)
        self.network = Network(nodes + 1, prefix="dnisl")
        self.daemons: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf")}
        self.nodes: dict[str, str] = {}

    def __enter__(self) -> "Cluster":
        install()
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(exist_ok=True)
        ctl, *hosts = self.network.__enter__()
        try:
            self.controller, self.hosts = ctl, hosts
            self.nodes = {f"node{i}": h.ip for i, h in enumerate(hosts)}
            self._write_conf()
            self._munged()
            self._start(ctl, _sbin("slurmctld"), "-D", "-c", "-i", "-f", self.env["SLURM_CONF"])
            for name, host in zip(self.nodes, hosts):
                (self.dir / "spool" / name).mkdir(exist_ok=True)
                self._start(host, _sbin("slurmd"), "-D", "-N", name, "-f", self.env["SLURM_CONF"])
            self._wait_idle()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        # Killing everything in the namespaces ends the daemons and any job step left.
        for proc in self.daemons:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.daemons:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.network.__exit__(*exc)

    def leftovers(self) -> list[int]:
        """Live processes that name this cluster's files (daemons); job steps die with their namespace."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (OSError, IndexError):
                continue
            if str(self.dir).encode() in cmdline and not zombie:
                found.append(int(entry.name))
        return found

    def _write_conf(self) -> None:
        nodes = "\n".join(f"NodeName={name} NodeAddr={ip} CPUs={os.cpu_count()} State=UNKNOWN"
                          for name, ip in self.nodes.items())
        conf = SLURM_CONF.format(hostname=socket.gethostname(), controller=self.controller.ip,
                                 dir=self.dir, nodes=nodes)
        Path(self.env["SLURM_CONF"]).write_text(conf)

    def _munged(self) -> None:
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        # munged runs in the root namespace: its socket is a file, reachable from every namespace.
        argv = [_sbin("munged"), "--force", "--foreground", f"--key-file={key}",
                f"--socket={self.dir}/munge.socket", f"--pid-file={self.dir}/munged.pid",
                f"--log-file={self.dir}/munged.log", f"--seed-file={self.dir}/munged.seed"]
        self.daemons.append(subprocess.Popen(argv, env=_UNTAGGED, stdout=subprocess.DEVNULL,
                                             stderr=open(self.dir / "munged.err", "w")))
        if not wait_for(lambda: (self.dir / "munge.socket").exists(), 10):
            raise SlurmError(f"munged did not start: {self._tail('munged.err')}{self._tail('munged.log')}")

    def _start(self, host, *argv: str) -> None:
        name = Path(argv[0]).name + (f"-{argv[argv.index('-N') + 1]}" if "-N" in argv else "")
        out = open(self.dir / f"{name}.out", "w")
        proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{host.name}", *argv], env=_UNTAGGED,
                                stdout=out, stderr=subprocess.STDOUT)
        self.daemons.append(proc)

    def _wait_idle(self, timeout: float = 60) -> None:
        def idle():
            for proc in self.daemons:
                if proc.poll() is not None:
                    raise SlurmError(f"{proc.args[2:]} exited {proc.returncode}: {self.logs()}")
            out = self.client("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            return out.count("idle") == self.n
        if not wait_for(idle, timeout, 0.5):
            raise SlurmError(f"nodes not idle after {timeout} s: "
                             f"{self.client('sinfo', '-N', check=False).stdout}{self.logs()}")

    def client(self, *argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """A Slurm command run from the controller's namespace (the root namespace is off the subnet)."""
        return subprocess.run(["nsenter", f"--net=/var/run/netns/{self.controller.name}", *argv],
                              env={**self.env, **kw.pop("env", {})}, capture_output=True, text=True,
                              check=check, timeout=timeout, **kw)

    def ended(self, job: str) -> bool:
        """The job has left the queue: done, and its processes gone."""
        return not self.client("squeue", "-h", "-j", job, check=False).stdout.strip()

    def submit(self, workdir: Path, *argv: str, env=None) -> str:
        """`dni slurm submit ARGV` from workdir; the job's id."""
        result = self.client(sys.executable, "-m", "coordinator", "slurm", "submit", *argv, cwd=workdir,
                             env=env or {})
        return result.stdout.split("submitted job ", 1)[1].split()[0]

    def logs(self) -> str:
        return "".join(self._tail(p.name) for p in sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("*.out")))

    def _tail(self, name: str, n: int = 1500) -> str:
        path = self.dir / name
        return f"\n--- {name}\n{path.read_text(errors='replace')[-n:]}" if path.exists() else ""
