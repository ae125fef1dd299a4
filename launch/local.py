"""Run one `jaxformer` command as N processes on this machine, as a multi-host pod would.

Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I`
and its own share of the CPU devices; process 0's output is shown, the others' go to
`<workdir>/process_<i>.log`. The exit code is the first non-zero one.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      train --config=configs/gpt/shakespeare_char.py:runlocal --workdir=/tmp/pod
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys


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


if __name__ == "__main__":
    sys.exit(main())
