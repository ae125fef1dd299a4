"""Local launching: one `jaxformer` command as N processes (a pod in miniature), and the
`local` sweep launcher, which runs a sweep's points on this machine, N at a time.

`main` runs one `jaxformer` command as N processes on this machine, as a multi-host pod would.

Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I`
and its own share of the CPU devices; process 0's output is shown, the others' go to
`<workdir>/process_<i>.log` (`--log_dir` to choose; a temporary directory when the command
has no --workdir). SIGTERM and SIGINT are passed on to every process; when one process fails,
the others get SIGTERM (and are killed after `--grace_seconds`), and the exit status is that
of the first to fail (128+N for signal N).

  python -m launch.local --num_processes=2 --devices_per_process=4 -- \
      train --config=configs/gpt/shakespeare_char.py:runlocal --workdir=/tmp/pod

`LocalLauncher` is `jaxformer sweep --launcher=local`: each point's output goes to its log, its
exit code to its exit file (see launch/sweep.py); with `--processes=N` each point is itself a
pod of N processes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

from jaxformer.errors import UserError
from launch import depends

DESCRIPTION = ("Runs one jaxformer command as N processes on this machine (a multi-host pod in "
               "miniature), each with its own share of CPU devices.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=4)
    parser.add_argument("--log_dir", default=None,
                        help="where processes 1.. log (default: the command's --workdir, "
                             "else a new temporary directory)")
    parser.add_argument("--grace_seconds", type=float, default=60.0,
                        help="after stopping the others on a failure, how long they may take "
                             "to save a checkpoint before they are killed")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- followed by a jaxformer command and its flags")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a jaxformer command after --")
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be >= 1")
    log_dir = pod_log_dir(args.log_dir, command)
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
        f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={args.devices_per_process}").strip())
    pod = Pod()
    with pod.forwarding_signals():
        for i in range(args.num_processes):
            flags = [f"--coordinator_address={address}",
                     f"--num_processes={args.num_processes}", f"--process_id={i}"]
            log = os.path.join(log_dir, f"process_{i}.log") if i else None
            pod.start([sys.executable, "-m", "jaxformer", *command, *flags], env, log)
        if args.num_processes > 1:
            print(f"processes 1-{args.num_processes - 1} log to {log_dir}/process_<i>.log",
                  file=sys.stderr, flush=True)
        return pod.wait(args.grace_seconds)


def pod_log_dir(log_dir: str | None, command: list[str]) -> str:
    """--log_dir, else the command's --workdir (made if new), else a new temporary directory."""
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        return log_dir
    workdir = _flag_value(command, "--workdir")
    if workdir:
        try:
            os.makedirs(workdir, exist_ok=True)
            return workdir
        except OSError:
            pass  # The command itself says what is wrong with its workdir.
    return tempfile.mkdtemp(prefix="jaxformer-pod-")


def _flag_value(command: list[str], flag: str) -> str | None:
    """The value of `--flag=V` or `--flag V` in `command`."""
    for i, item in enumerate(command):
        if item.startswith(flag + "="):
            return item[len(flag) + 1:]
        if item == flag and i + 1 < len(command):
            return command[i + 1]
    return None


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it: 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


class Pod:
    """The processes of one command: SIGTERM/SIGINT to this process go to all of them, and
    when one fails the others are stopped (SIGTERM: they save a checkpoint if they can)."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []

    def start(self, command: list[str], env: dict, log_path: str | None) -> None:
        out = open(log_path, "w") if log_path else None  # noqa: SIM115 -- closed in wait().
        if out:
            self.logs.append(out)
        # Its own session: a terminal's Ctrl-C reaches it once, forwarded from here.
        self.processes.append(subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True, preexec_fn=_die_with_parent))

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    @contextlib.contextmanager
    def forwarding_signals(self):
        forward = lambda signum, frame: self.signal_all(signum)  # noqa: E731
        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.signal_all(signal.SIGKILL)  # None is left unless this process itself failed.

    def wait(self, grace_seconds: float) -> int:
        """Waits for every process; returns the exit status of the first to fail (0: none)."""
        first, deadline = 0, None
        while any(p.poll() is None for p in self.processes):
            if not first:
                failed = next((p for p in self.processes if p.poll()), None)
                if failed is not None:
                    first = exit_status(failed.returncode)
                    self.signal_all(signal.SIGTERM)
                    deadline = time.monotonic() + grace_seconds
            elif time.monotonic() > deadline:
                self.signal_all(signal.SIGKILL)  # Hung in a collective with the failed one.
            time.sleep(0.1)
        for log in self.logs:
            log.close()
        failed = [p for p in self.processes if p.returncode]
        return first or (exit_status(failed[0].returncode) if failed else 0)


def _die_with_parent() -> None:
    """In a child: SIGTERM when this launcher dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalLauncher:
    """Runs points on this machine, `parallel` at a time, each as `processes` processes."""

    name = "local"

    def __init__(self, parallel: int = 1, processes: int = 1, devices_per_process: int = 1):
        if parallel < 1 or processes < 1 or devices_per_process < 1:
            raise UserError("--parallel, --processes and --devices_per_process must be >= 1")
        self.parallel = parallel
        self.processes = processes
        self.devices_per_process = devices_per_process

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("local launcher")
        group.add_argument("--processes", type=int, default=1,
                           help="processes per point (a local pod through launch/local.py)")
        group.add_argument("--devices_per_process", type=int, default=1,
                           help="CPU devices of each process of a multi-process point")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalLauncher:
        parallel = 1 if args.parallel is None else args.parallel
        return cls(parallel, args.processes, args.devices_per_process)

    def command(self, sweep, point) -> list[str]:
        if self.processes == 1:
            return [sys.executable, "-m", "jaxformer", *sweep.train_args(point)]
        return [sys.executable, "-m", "launch.local", f"--num_processes={self.processes}",
                f"--devices_per_process={self.devices_per_process}",
                f"--log_dir={os.path.join(sweep.root, 'logs', point.name)}", "--",
                *sweep.train_args(point)]

    def script(self, sweep, points) -> str:
        lines = [f"# {len(points)} points, {self.parallel} at a time"]
        lines += [f"{shlex.join(self.command(sweep, p))} > {shlex.quote(sweep.log_path(p))} 2>&1"
                  for p in points]
        return "\n".join(lines)

    def launch(self, sweep, points, *, wait: bool = True, on_change=None) -> dict[str, dict]:
        """Runs the points to completion (`wait` is implied), each once the points it depends
        on have finished with exit 0 (see launch/depends.py). `on_change(running, extra)` is
        called whenever a point starts or ends. Ctrl-C or SIGTERM stop the running points
        (each saves a checkpoint first) and leave them unfinished, to resume on a rerun; then
        KeyboardInterrupt or `Stopped` (exit 128+SIGTERM) is raised."""
        os.makedirs(os.path.join(sweep.root, "logs"), exist_ok=True)
        queue, running, extra = list(points), {}, {}
        notify = on_change or (lambda running, extra: None)
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            while queue or running:
                if self._start_ready(sweep, queue, running, extra):
                    notify(set(running), extra)
                time.sleep(0.2)
                for name, (point, process, log) in list(running.items()):
                    if process.poll() is None:
                        continue
                    log.close()
                    sweep.record_exit(point, process.returncode)
                    del running[name]
                    notify(set(running), extra)
        except (KeyboardInterrupt, Stopped):
            for point, process, log in running.values():
                os.killpg(process.pid, signal.SIGTERM)  # The trainer checkpoints and exits.
            for point, process, log in running.values():
                process.wait()
                log.close()
            notify(set(), extra)  # The stopped points are pending again.
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return extra

    def _start_ready(self, sweep, queue: list, running: dict, extra: dict) -> bool:
        """Starts queued points whose dependencies have succeeded, while fewer than `parallel`
        run; takes off the queue those whose dependencies failed. Returns whether any changed."""
        changed = False
        for point in list(queue):
            waiting = {p.name for p in queue} | set(running)
            if any(name in waiting for name in point.after):
                continue
            failed = depends.failed_dependency(sweep, point)
            unfinished = depends.unfinished_dependency(sweep, point)
            if failed or unfinished:
                queue.remove(point)
                if failed:
                    depends.skip(sweep, point, failed)
                else:
                    depends.note(sweep, point, f"point {unfinished} has not finished: "
                                               f"{point.name} not started")
                changed = True
                continue
            if len(running) >= self.parallel:
                break
            queue.remove(point)
            self._start(sweep, point, running, extra)
            changed = True
        return changed

    def _start(self, sweep, point, running: dict, extra: dict) -> None:
        log = open(sweep.log_path(point), "a")  # noqa: SIM115 -- closed when it ends.
        if os.path.exists(sweep.exit_path(point)):
            os.remove(sweep.exit_path(point))
        process = subprocess.Popen(self.command(sweep, point), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        running[point.name] = (point, process, log)
        extra[point.name] = {"started": time.time()}

    def running(self, sweep, state: dict) -> set[str]:
        return set()  # Points run inside the launching process; the sweep lock excludes others.


class Stopped(Exception):
    """The sweep was stopped by a signal (SIGTERM): its exit status is 128+N."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}: the running points saved "
                         "a checkpoint and resume on a rerun")
        self.exit_code = 128 + signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


if __name__ == "__main__":
    sys.exit(main())
