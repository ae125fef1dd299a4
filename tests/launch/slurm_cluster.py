"""A real single-node SLURM cluster on this machine, for the tests of `launch.slurm`.

The `slurm_cluster` fixture starts munged (with its own key and socket), slurmctld and slurmd
from a generated slurm.conf in a temporary directory, points SLURM_CONF at it, waits for the
node to be idle, and stops all three at the end. Without the binaries (`.ci/slurm-setup`
installs them) or when a daemon does not start, the tests that use it skip and say why.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")  # Often in sbin, off a user's PATH.
COMMANDS = ("sbatch", "squeue", "sinfo", "scancel")
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PARTITION = "test"
START_SECONDS = 60


@dataclasses.dataclass
class Cluster:
    directory: str  # slurm.conf, state, spool and the daemons' logs.
    conf: str
    node: str
    partition: str


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_line(log: str) -> str:
    """The line of a daemon's log that says why it stopped (the last fatal or error line)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return "(no output)"
    for word in ("fatal", "error"):
        found = [line for line in lines if word in line.lower()]
        if found:
            return found[-1]
    return lines[-1] if lines else "(no output)"


def _node_line() -> str:
    """This machine as slurm.conf describes a node: `NodeName=host CPUs=... RealMemory=...`."""
    result = _run(shutil.which("slurmd", path=PATH), "-C")
    line = result.stdout.splitlines()[0] if result.stdout.strip() else ""
    if result.returncode != 0 or not line.startswith("NodeName="):
        pytest.skip(f"slurmd -C failed: {(result.stderr or result.stdout).strip()}")
    return line


def _write_conf(directory: str, node_line: str, munge_socket: str) -> str:
    host = socket.gethostname().split(".")[0]
    user = getpass.getuser()
    conf = f"""\
ClusterName=jaxformer-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    path = os.path.join(directory, "slurm.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(conf)
    return path


class _Daemons:
    """The daemons started so far, each in the foreground with its output in a log file."""

    def __init__(self, directory: str):
        self.directory = directory
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> None:
        with open(self.log(name), "w") as log:
            self.processes[name] = subprocess.Popen(
                [shutil.which(name, path=PATH), *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.log")

    def check(self) -> None:
        """Skips the tests if a daemon has exited, with the line that says why."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.skip(f"{name} exited with code {process.returncode}: "
                            f"{_error_line(self.log(name))}")

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_for(condition: Callable[[], bool], daemons: _Daemons, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not condition():
        daemons.check()
        if time.monotonic() > deadline:
            errors = "; ".join(f"{name}: {_error_line(daemons.log(name))}"
                               for name in daemons.processes)
            pytest.skip(f"SLURM test cluster: {what} not ready after {START_SECONDS} s ({errors})")
        time.sleep(0.5)


def _cancel_jobs() -> None:
    """Ends the jobs a failed test left behind, before their slurmd goes."""
    try:
        _run("scancel", f"--partition={PARTITION}")
        deadline = time.monotonic() + 30
        while _run("squeue", "--noheader").stdout.strip() and time.monotonic() < deadline:
            time.sleep(1)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    missing = [name for name in DAEMONS if shutil.which(name, path=PATH) is None]
    missing += [name for name in COMMANDS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}; .ci/slurm-setup "
                    "installs slurm-wlm and munge)")
    directory = tempfile.mkdtemp(prefix="jaxformer-slurm-")
    os.chmod(directory, 0o755)  # munged wants its socket's directory searchable by all.
    for sub in ("state", "spool"):
        os.mkdir(os.path.join(directory, sub))
    daemons = _Daemons(directory)
    old_conf = os.environ.get("SLURM_CONF")
    try:
        key, munge_socket = f"{directory}/munge.key", f"{directory}/munge.socket"
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(os.urandom(128))  # A key of this cluster's own, as `mungekey` makes one.
        daemons.start("munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
                      f"--pid-file={directory}/munged.pid", f"--seed-file={directory}/munged.seed",
                      f"--log-file={directory}/munged.file.log")
        _wait_for(lambda: os.path.exists(munge_socket), daemons, "munged")

        node_line = _node_line()
        node = node_line.split()[0].partition("=")[2]
        conf = _write_conf(directory, node_line, munge_socket)
        os.environ["SLURM_CONF"] = conf  # For the daemons, and the launcher's sbatch/squeue.
        daemons.start("slurmctld", "-D", "-f", conf)
        daemons.start("slurmd", "-D", "-f", conf)

        def idle() -> bool:
            try:
                state = _run("sinfo", "--noheader", "--format=%T", f"--nodes={node}").stdout
            except subprocess.TimeoutExpired:
                return False
            return state.strip() == "idle"

        _wait_for(idle, daemons, f"node {node} idle")
        yield Cluster(directory=directory, conf=conf, node=node, partition=PARTITION)
    finally:
        if "slurmctld" in daemons.processes and daemons.processes["slurmctld"].poll() is None:
            _cancel_jobs()
        daemons.stop()
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        shutil.rmtree(directory, ignore_errors=True)
