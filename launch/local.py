"""Local launching: one `jaxformer` command as N processes (a pod in miniature), and the
`local` sweep launcher, which runs a sweep's points on this machine, N at a time.

`main` runs one `jaxformer` command as N processes on this machine, as a multi-host pod would.

Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I`
and its own share of the CPU devices; process 0's output is shown, the others' go to
`<workdir>/process_<i>.log`. The exit code is the first non-zero one.

  python -m launch.local --num_processes=2 --devices_per_process=4 -- \
      train --config=configs/gpt/shakespeare_char.py:runlocal --workdir=/tmp/pod

`LocalLauncher` is `jaxformer sweep --launcher=local`: each point's output goes to its log, its
exit code to its exit file (see launch/sweep.py); with `--processes=N` each point is itself a
pod of N processes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from jaxformer.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=4)
    parser.add_argument("--log_dir", default=None, help="where other processes log (default: cwd)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- followed by a jaxformer command and its flags")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a jaxformer command after --")
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
        f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={args.devices_per_process}").strip())
    log_dir = args.log_dir or os.getcwd()
    os.makedirs(log_dir, exist_ok=True)
    processes, logs = [], []
    for i in range(args.num_processes):
        flags = [f"--coordinator_address={address}", f"--num_processes={args.num_processes}",
                 f"--process_id={i}"]
        out = None
        if i > 0:
            out = open(os.path.join(log_dir, f"process_{i}.log"), "w")
            logs.append(out)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "jaxformer", *command, *flags], env=env, stdout=out,
            stderr=subprocess.STDOUT if out else None))
    codes = [p.wait() for p in processes]
    for log in logs:
        log.close()
    return next((c for c in codes if c), 0)


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
        """Runs the points to completion (`wait` is implied). `on_change(running, extra)` is
        called whenever a point starts or ends. Ctrl-C or SIGTERM stop the running points
        (each saves a checkpoint first) and leave them unfinished, to resume on a rerun."""
        os.makedirs(os.path.join(sweep.root, "logs"), exist_ok=True)
        queue, running, extra = list(points), {}, {}
        notify = on_change or (lambda running, extra: None)

        def start(point):
            log = open(sweep.log_path(point), "a")  # noqa: SIM115 -- closed when it ends.
            if os.path.exists(sweep.exit_path(point)):
                os.remove(sweep.exit_path(point))
            process = subprocess.Popen(self.command(sweep, point), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            running[point.name] = (point, process, log)
            extra[point.name] = {"started": time.time()}

        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while queue or running:
                while queue and len(running) < self.parallel:
                    start(queue.pop(0))
                    notify(set(running), extra)
                time.sleep(0.2)
                for name, (point, process, log) in list(running.items()):
                    if process.poll() is None:
                        continue
                    log.close()
                    sweep.record_exit(point, process.returncode)
                    del running[name]
                    notify(set(running), extra)
        except KeyboardInterrupt:
            for point, process, log in running.values():
                os.killpg(process.pid, signal.SIGTERM)  # The trainer checkpoints and exits.
            for point, process, log in running.values():
                process.wait()
                log.close()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return extra

    def running(self, sweep, state: dict) -> set[str]:
        return set()  # Points run inside the launching process; the sweep lock excludes others.


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
