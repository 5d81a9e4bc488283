"""One writer at a time: an OS lock on a lock file, so that two processes writing the same folder
never lose each other's work.

Usage::

    from cce_tf import run_lock
    with run_lock.hold(run_lock.lock_path("runs/demo"), wait=False):   # Busy (exit 2) if another holds it
        ...                                                              # train into runs/demo
    with run_lock.hold(run_lock.lock_path("runs/demo/eval"), wait=True):  # waits for the other writer
        ...                                                              # re-read, merge, write the results

Who takes which lock (docs/reliability.md, "Two processes at once"):

- ``cce_tf.train`` holds RUN/.lock for the whole run and refuses (``wait=False``) when another
  process holds it: a second training into one folder would overwrite the first's checkpoints.
- The evaluation tools hold their results folder's lock (RUN/eval/.lock, or PATH.eval/.lock for a
  model file) only around re-reading, merging and writing a results file, and wait for it: two
  evaluations of one run compute side by side and both results are kept.
- ``studies.jobs.run_job`` holds OUT/jobs/ID.lock while it runs the job and waits for it, so two
  invocations of a study on one --out_dir never run the same job twice; ``studies.reproduce``
  writes the tables under OUT/.lock.

Why ``fcntl.flock``: the kernel drops the lock when its holder's process ends, however it ends
(``kill -9`` included), so a killed run never leaves a lock that blocks the next one. The holder
writes "pid P on HOST since TIME: COMMAND" into the file, which a refused or waiting process
names. The file is removed as the lock is released, so it is there only while held, or after a
killed holder (then the next process takes it over). Linux and macOS; on a network file system
only where its client supports flock (Linux NFS clients emulate it with byte-range locks).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import socket
import sys
import time
from typing import Iterator

from cce_tf import cli_flags
from cce_tf.run_files import LOCK_FILE


class Busy(cli_flags.UsageError):
    """Another process holds the lock (``hold(..., wait=False)``): one line, exit code 2.
    ``holder`` is what that process wrote into the lock file."""

    def __init__(self, path: str, holder: str):
        super().__init__(f"{os.path.dirname(path)} is in use by {holder}")
        self.holder = holder


def lock_path(folder: str) -> str:
    """The lock file of a run folder or results folder."""
    return os.path.join(folder, LOCK_FILE)


@contextlib.contextmanager
def hold(path: str, wait: bool) -> Iterator[None]:
    """Hold the lock file ``path`` for the block: ``wait`` True blocks until its holder releases
    it (printing one line to stderr naming the holder), False raises ``Busy`` at once. The folder
    (and its missing parents) is made if need be, and removed again on release if it was made for
    the lock and holds nothing else (a refused start leaves no trace)."""
    made = []  # the folders the lock needs that are missing, deepest first
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    fd = _acquire(path, wait)
    try:
        text = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: " \
               f"{shlex.join(sys.argv)}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        yield
    finally:
        # Removed while still held: a process that opened it meanwhile finds it gone once it gets
        # the lock, and takes the next one (_acquire), so two holders never share the path.
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)  # releases the lock
        for folder in made:
            with contextlib.suppress(OSError):  # not empty: files were written there
                os.rmdir(folder)


def _acquire(path: str, wait: bool) -> int:
    """A descriptor of ``path`` holding its exclusive lock."""
    while True:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder was removed in between by a releasing holder
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                if not wait:
                    raise Busy(path, holder) from None
                print(f"waiting for {holder} to release {path}", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the lock of a file its holder removed on release: lock the one there now


def _is_at(fd: int, path: str) -> bool:
    """The open file ``fd`` is the file at ``path`` now."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
