"""A throwaway one-node Slurm cluster on localhost, for tests/test_slurm.py (and by hand: `python -m tests.slurm_cluster`).

Everything lives in one temporary folder: its own munge daemon (key, socket), slurm.conf (found through
$SLURM_CONF), state and spool folders, logs; nothing system-wide is configured, and `stop` ends the three
daemons. The node line comes from `slurmd -C`; slurmctld and slurmd run as root (SlurmUser=root) with
proctrack/linuxproc, task/none, no accounting and no cgroup plugins: what a container can run. Debian 12's
slurm-wlm 22.05 (`make setup` installs slurmctld, slurmd, slurm-client and munge).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


class SlurmUnavailable(Exception):
    """Slurm cannot start here (not installed, not root); the message says why."""


@dataclass(frozen=True)
class Cluster:
    folder: Path
    conf: Path
    node: str
    cpus: int

    @property
    def env(self) -> dict[str, str]:
        """The environment every Slurm client command needs: this cluster's slurm.conf."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 30) -> str:
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> list[tuple[str, str]]:
        """(job id, state) of every job in the queue (array tasks as 12_0, 12_1)."""
        out = self.run("squeue", "--noheader", "--array", "--format=%i %T")
        return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]

    def wait_empty(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > end:
                raise TimeoutError(f"Slurm jobs still queued after {timeout} s: {self.jobs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def _find(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def unavailable_reason() -> str | None:
    """Why a one-node cluster cannot start here (None: it can)."""
    missing = [name for name in DAEMONS if _find(name) is None]
    if missing:
        return (f"Slurm is not installed (missing {', '.join(missing)}; Debian: apt-get install slurmctld slurmd "
                "slurm-client munge, which `make setup` does as root)")
    if os.geteuid() != 0:
        return "the test cluster's slurmd must run as root (SlurmUser=root), and this is not root"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node_line() -> tuple[str, int]:
    """`slurmd -C`'s node line (this machine's CPUs, boards, sockets, memory), bound to 127.0.0.1."""
    out = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("NodeName="))
    fields = dict(field.split("=", 1) for field in line.split())
    fields.pop("UpTime", None)
    node = socket.gethostname().split(".")[0]
    fields["NodeName"] = node
    fields["NodeAddr"] = "127.0.0.1"
    return " ".join(f"{k}={v}" for k, v in fields.items()), int(fields.get("CPUs", 1))


def write_conf(folder: Path) -> tuple[Path, str, int]:
    node_line, cpus = _node_line()
    node = node_line.split()[0].split("=", 1)[1]
    ctld_port, slurmd_port = _free_ports(2)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=p2ptest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / 'munge.socket'}
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=10
SchedulerParameters=sched_interval=1
{node_line}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf, node, cpus


@contextlib.contextmanager
def slurm_cluster(timeout: float = 60) -> Iterator[Cluster]:
    """Start munge, slurmctld and slurmd in a temporary folder; yield once the node takes jobs; stop them all."""
    reason = unavailable_reason()
    if reason is not None:
        raise SlurmUnavailable(reason)
    folder = Path(tempfile.mkdtemp(prefix="p2p-slurm-"))
    os.chmod(folder, 0o755)
    conf, node, cpus = write_conf(folder)
    cluster = Cluster(folder, conf, node, cpus)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    procs: list[subprocess.Popen] = []

    def daemon(*cmd: str, log: str) -> None:
        procs.append(subprocess.Popen(list(cmd), env=cluster.env, stdout=open(folder / log, "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        daemon(_find("munged"), "-F", "--force", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
               f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
               f"--seed-file={folder / 'munged.seed'}", log="munged.out.log")
        _wait(lambda: (folder / "munge.socket").exists(), 10, "munged", cluster, procs)
        daemon(_find("slurmctld"), "-D", "-f", str(conf), log="slurmctld.out.log")
        daemon(_find("slurmd"), "-D", "-f", str(conf), "-N", node, log="slurmd.out.log")
        _wait(lambda: _node_idle(cluster), timeout, "the Slurm node", cluster, procs)
        yield cluster
    finally:
        with contextlib.suppress(Exception):  # the jobs first, while slurmd is there to end their steps
            cluster.run("scancel", "--user", "root")
            cluster.wait_empty(20)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _kill_leftovers(conf)
        shutil.rmtree(folder, ignore_errors=True)


def _kill_leftovers(conf: Path) -> None:
    """Job step daemons (slurmstepd) and their tasks outlive slurmd: end those of this cluster (its SLURM_CONF)."""
    mark = f"SLURM_CONF={conf}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)


def _node_idle(cluster: Cluster) -> bool:
    done = subprocess.run([_find("sinfo"), "--noheader", "--format=%T"], env=cluster.env, capture_output=True,
                          text=True, timeout=10)
    return done.returncode == 0 and done.stdout.strip().rstrip("*") == "idle"


def _wait(check, timeout: float, what: str, cluster: Cluster, procs: list[subprocess.Popen]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            raise SlurmUnavailable(f"{', '.join(map(str, dead))} exited at start:\n{cluster.logs()}")
        time.sleep(0.3)
    raise SlurmUnavailable(f"{what} did not come up in {timeout} s:\n{cluster.logs()}")


if __name__ == "__main__":  # start one by hand and try it: python -m tests.slurm_cluster
    with slurm_cluster() as c:
        print(f"export SLURM_CONF={c.conf}   # node {c.node}, {c.cpus} CPUs; Ctrl-C stops it")
        print(c.run("srun", "hostname"))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
