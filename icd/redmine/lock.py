"""One sync at a time per registry: an advisory lock (``fcntl.flock``) on a file beside it.

``.interfaces.yaml.lock`` sits next to ``interfaces.yaml`` and is never deleted (deleting a lock
file lets two processes lock two different files).  The lock is held for the whole pull, push or
scaffold, from before the registry is read until after its last write, so a second sync reads
the registry only once the first has recorded every id it created (two concurrent pushes then
create each task once).  The holder writes its pid and start time into the file, for the
message of whoever waits.  The kernel releases the lock when the holder exits, even if killed.
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

DEFAULT_TIMEOUT = 120.0   # seconds a sync waits for another one before it gives up


class LockBusy(Exception):
    """Another sync holds the registry; one line for a person."""


def lock_path(registry: Path) -> Path:
    registry = Path(registry)
    return registry.parent / f".{registry.name}.lock"


@contextmanager
def registry_lock(registry: Path, timeout: Optional[float] = None,
                  on_wait: Optional[Callable[[str], None]] = None) -> Iterator[Path]:
    """Hold the lock of ``registry``; wait up to ``timeout`` seconds for another holder, then
    raise ``LockBusy`` saying who holds it.  ``on_wait`` is told once that we are waiting."""
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    path = lock_path(registry)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LockBusy(f"cannot create the lock file {path} ({exc.strerror}); the folder of the registry "
                       "must be writable for a sync") from None
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = _holder(path)
            if time.monotonic() >= deadline:
                raise LockBusy(f"another `icd redmine` sync ({holder}) is working on {registry} and did not "
                               f"finish within {timeout:g} s; nothing was done: run this again when it has "
                               f"finished (lock: {path})")
            if not told and on_wait is not None:
                on_wait(f"waiting for another `icd redmine` sync ({holder}) to finish with {registry} "
                        f"(up to {timeout:g} s)")
                told = True
            time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {dt.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}\n".encode())
        yield path
    finally:
        os.close(fd)   # releases the lock


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
