"""The `tpu` sweep launcher: points on Cloud TPU VM pod slices, through `gcloud`.

The points are dealt round-robin over the named slices (a point that uses another's workdir,
`hyper.workdir_of`, goes to that point's slice, after it); each slice runs its points one after
another, every point on all workers of the slice at once (`--worker=all`), the trainer
joining them with `jax.distributed.initialize()` (`--distributed`), which finds the pod's
workers itself. Before its first point each slice receives this checkout (`git archive` of
HEAD, copied with `gcloud ... scp`) and installs it with JAX's TPU wheels. Slices run side by
side; the output of each point is streamed into its log here, and its exit code, as
`gcloud` returns it, into its exit file.

Only committed code travels: the config file must be a committed, unchanged file of this
checkout (the workers are given its path inside the archive), and other uncommitted changes
are named in a warning, since the workers run without them.

  jaxformer sweep --config=configs/vit/imagenet.py:variant=B/16 --workdir=/mnt/sweeps/vit \
      --launcher=tpu --tpu=pod-a,pod-b --zone=us-central2-b --dry_run

The sweep root must be a path that the TPU workers and this machine both see (a gcsfuse or
Filestore mount), so that checkpoints survive the workers and `jaxformer results` can read
the metrics. `python -m launch.tpu ...` is `jaxformer sweep --launcher=tpu ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import threading
import time

from jaxformer.errors import UserError
from launch import depends

REMOTE_DIR = "jaxformer"
# The checkout that holds this package: what `git archive` ships to the workers.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = 'python3 -m pip install -q -U "jax[tpu]" && python3 -m pip install -q -e .'


class TpuLauncher:
    name = "tpu"

    def __init__(self, tpus: list[str], zone: str, project: str = "",
                 remote_dir: str = REMOTE_DIR, setup: str = SETUP):
        if not tpus or not all(tpus):
            raise UserError("--launcher=tpu needs --tpu=NAME[,NAME...]")
        if not zone:
            raise UserError("--launcher=tpu needs --zone=ZONE")
        self.tpus, self.zone, self.project = tpus, zone, project
        self.remote_dir, self.setup = remote_dir, setup

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("tpu launcher")
        group.add_argument("--tpu", default="", help="TPU VM slice name(s), comma-separated")
        group.add_argument("--zone", default="", help="the slices' zone")
        group.add_argument("--project", default="", help="GCP project (default: gcloud's)")
        group.add_argument("--remote_dir", default=REMOTE_DIR,
                           help="where the code goes on the workers (relative to home)")
        group.add_argument("--setup", default=SETUP, help="install command run in remote_dir")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TpuLauncher:
        tpus = [t.strip() for t in args.tpu.split(",")] if args.tpu else []
        return cls(tpus, args.zone, args.project, args.remote_dir, args.setup)

    def assignment(self, points) -> dict[str, list]:
        """The points of each slice: chains of dependent points (see launch/depends.py) dealt
        round-robin, so that a point runs on the slice of, and after, those it depends on."""
        groups = depends.chains(points)
        return {tpu: [p for group in groups[i::len(self.tpus)] for p in group]
                for i, tpu in enumerate(self.tpus)}

    def _gcloud(self, verb: str, *args: str) -> list[str]:
        command = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={self.zone}"]
        return command + ([f"--project={self.project}"] if self.project else [])

    def _ssh(self, tpu: str, remote: str) -> list[str]:
        return self._gcloud("ssh", tpu, "--worker=all", f"--command={remote}")

    def archive_path(self, sweep) -> str:
        return os.path.join(sweep.root, "logs", "code.tar.gz")

    def slice_commands(self, sweep, tpu: str, points, config: str
                       ) -> list[tuple[str | None, list[str]]]:
        """(point name or None for set-up, command) in the order the slice runs them; `config`
        is the sweep's config spec as the workers see it (`shipped_config`)."""
        archive = self.archive_path(sweep)
        unpack = (f"mkdir -p {self.remote_dir} && tar -xzf code.tar.gz -C {self.remote_dir} "
                  f"&& cd {self.remote_dir} && {self.setup}")
        steps: list[tuple[str | None, list[str]]] = [
            (None, self._gcloud("scp", archive, f"{tpu}:code.tar.gz", "--worker=all")),
            (None, self._ssh(tpu, unpack)),
        ]
        for point in points:
            train = shlex.join(["python3", "-m", "jaxformer",
                                *sweep.train_args(point, config=config), "--distributed"])
            steps.append((point.name, self._ssh(tpu, f"cd {self.remote_dir} && {train}")))
        return steps

    def script(self, sweep, points) -> str:
        config = shipped_config(sweep.config)
        lines = [shlex.join(_archive_command(self.archive_path(sweep)))]
        for tpu, assigned in self.assignment(points).items():
            lines.append(f"# slice {tpu}: {len(assigned)} point(s), one after another")
            lines += [shlex.join(command) for _, command in
                      self.slice_commands(sweep, tpu, assigned, config)]
        return "\n".join(lines)

    def launch(self, sweep, points, *, wait: bool = True, on_change=None) -> dict[str, dict]:
        """Runs every slice's commands (slices in parallel) until all points have ended."""
        config = shipped_config(sweep.config)
        os.makedirs(os.path.join(sweep.root, "logs"), exist_ok=True)
        archive = subprocess.run(_archive_command(self.archive_path(sweep)),
                                 capture_output=True, text=True)
        if archive.returncode:
            raise UserError(f"git archive of this checkout failed: {archive.stderr.strip()}")
        extra: dict[str, dict] = {}
        running: set[str] = set()
        lock = threading.Lock()
        notify = on_change or (lambda running, extra: None)
        by_name = {p.name: p for p in points}

        def run_slice(tpu: str, assigned) -> None:
            for name, command in self.slice_commands(sweep, tpu, assigned, config):
                if name and _held_back(sweep, by_name[name]):
                    with lock:
                        notify(set(running), extra)
                    continue
                log_path = (sweep.log_path(by_name[name]) if name
                            else os.path.join(sweep.root, "logs", f"setup-{tpu}.log"))
                with lock:
                    if name:
                        running.add(name)
                        extra[name] = {"started": time.time(), "tpu": tpu}
                        notify(set(running), extra)
                with open(log_path, "a") as log:
                    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
                with lock:
                    if name is None and code:
                        for point in assigned:  # No set-up: the slice's points cannot run.
                            sweep.record_exit(point, code)
                        notify(set(running), extra)
                        return
                    if name:
                        running.discard(name)
                        sweep.record_exit(by_name[name], code)
                        notify(set(running), extra)

        threads = [threading.Thread(target=run_slice, args=item, daemon=True)
                   for item in self.assignment(points).items() if item[1]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return extra

    def running(self, sweep, state: dict) -> set[str]:
        return set()  # Points run under the launching process; the sweep lock excludes others.


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", CHECKOUT, *args], capture_output=True, text=True)


def _archive_command(path: str) -> list[str]:
    return ["git", "-C", CHECKOUT, "archive", "--format=tar.gz", "-o", path, "HEAD"]


def shipped_config(spec: str) -> str:
    """The config spec `FILE[:ARGS]` with FILE as a path inside the archive the workers get.

    Raises `UserError` when FILE is outside this checkout, not committed, or changed since
    HEAD (the workers would read another file, or none); warns about other uncommitted changes.
    """
    path, colon, arg = spec.partition(":")
    if _git("rev-parse", "HEAD").returncode:
        raise UserError(f"--launcher=tpu ships this checkout with git archive, but {CHECKOUT} "
                        "is not a git checkout with a commit")
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(CHECKOUT))
    if relative.startswith(os.pardir + os.sep):
        raise UserError(f"--launcher=tpu: the config {path} is outside the checkout the "
                        f"workers receive ({CHECKOUT}); put it there and commit it")
    if _git("ls-files", "--error-unmatch", "--", relative).returncode:
        raise UserError(f"--launcher=tpu: the config {relative} is not committed, and the "
                        "workers receive the last commit; commit it")
    if _git("diff", "--quiet", "HEAD", "--", relative).returncode:
        raise UserError(f"--launcher=tpu: the config {relative} has changes since the last "
                        "commit, which the workers would not see; commit them")
    changed = _git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    if changed:
        names = ", ".join(line[3:] for line in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        logging.getLogger(__name__).warning(
            "the workers run the last commit, without the uncommitted changes to %s%s",
            names, more)
    return relative + colon + arg


def _held_back(sweep, point) -> bool:
    """Whether `point` must not start: a point it depends on failed (then it is recorded as
    failed) or has not finished."""
    failed = depends.failed_dependency(sweep, point)
    unfinished = depends.unfinished_dependency(sweep, point)
    if failed:
        depends.skip(sweep, point, failed)
    elif unfinished:
        depends.note(sweep, point, f"point {unfinished} has not finished: {point.name} not "
                                   "started")
    return bool(failed or unfinished)


def main(argv: list[str] | None = None) -> int:
    from jaxformer.cli import main as cli

    return cli(["sweep", "--launcher=tpu", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
