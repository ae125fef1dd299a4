"""Workdir lock (exclusive, naming its holder, freed by its holder's death) and path check."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from jaxformer.errors import UserError
from jaxformer.train.workdir import WorkdirBusyError, check_workdir_path, lock_workdir

ROOT = pathlib.Path(__file__).resolve().parents[2]

_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from jaxformer.train.workdir import lock_workdir

    with lock_workdir(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_is_refused_until_the_holder_is_killed(tmp_path):
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, workdir], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(WorkdirBusyError) as busy, lock_workdir(workdir):
            pytest.fail("the lock was taken twice")
        message = str(busy.value)
        assert f"process {holder.pid} on {socket.gethostname()} since " in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    with lock_workdir(workdir):  # The kernel freed the dead holder's lock.
        recorded = json.loads((tmp_path / "run" / ".lock").read_text())
        assert recorded["pid"] == os.getpid()


def test_the_lock_is_free_again_after_the_block(tmp_path):
    # flock excludes another open file description, even in the same process.
    with lock_workdir(str(tmp_path)), pytest.raises(WorkdirBusyError), lock_workdir(str(tmp_path)):
        pytest.fail("the lock was taken twice")
    with lock_workdir(str(tmp_path)):
        pass


def test_a_workdir_that_is_a_file_is_a_clear_error(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("not a workdir")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_workdir_path(str(existing))
    with pytest.raises(ValueError, match="exists and is not a directory"), \
            lock_workdir(str(existing)):
        pytest.fail("a file was locked as a workdir")
    check_workdir_path(str(tmp_path))
    check_workdir_path(str(tmp_path / "new"))


def test_a_workdir_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="notes.txt is not a directory"):
        check_workdir_path(str(tmp_path / "notes.txt" / "run"))


def test_an_unwritable_parent_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere but on a read-only file system: stand one in.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: (
            False if os.path.samefile(path, parent) else real_access(path, mode)))
    try:
        with pytest.raises(UserError, match=r"readonly is not writable"):
            check_workdir_path(str(parent / "run" / "deeper"))
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


def test_a_lock_that_cannot_be_written_is_a_user_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "makedirs", read_only)
    with pytest.raises(UserError, match="cannot write the workdir .*: Read-only file system"):
        with lock_workdir(str(tmp_path / "run")):
            pass
