"""One process per run directory: an exclusive lock file inside it for the life of a run.

``eval``, ``score``, ``merge`` and the reference trainer's evaluator hold
``<dir>/run.lock`` while they write. The lock is an ``flock`` on that file, so the kernel
drops it the instant its holder dies (SIGKILL, OOM, a lost node): a lock file left by a
killed run is recognised as stale (its content names a holder, yet nobody holds the lock)
and taken over, with one line saying so. The file records the holder's PID, host, command
and start time, which is what a second process prints when it is refused. A normal exit
removes the file, so a finished run directory holds no trace of it.

Within one process the lock is re-entrant (``eval`` holds it and scores under it). On a file
system without locks the run goes on unlocked after one warning line.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from unified_bench.core.errors import RunDirLockedError
from unified_bench.core.provenance import command_line

try:
    import fcntl
except ImportError:  # not a POSIX system: runs go unlocked, after a notice
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "run.lock"

# errno values of a file system that cannot lock (some network and FUSE mounts)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run directory, as written into its lock file."""

    pid: int | None = None
    host: str | None = None
    command: str | None = None
    since: str | None = None

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(pid if isinstance(pid, int) else None, data.get("host"), data.get("command"), data.get("since"))

    def describe(self) -> str:
        who = f"PID {self.pid if self.pid is not None else '?'} on host {self.host or '?'}"
        details = [d for d in (f"since {self.since}" if self.since else None, self.command) if d]
        return who + (f" ({', '.join(details)})" if details else "")


class _Held:
    """A lock this process holds: its file descriptor and how many callers share it."""

    def __init__(self, fd: int | None, path: Path, created_dir: bool) -> None:
        self.fd = fd  # None: the file system cannot lock; held in name only
        self.path = path
        self.created_dir = created_dir  # removed again on release if nothing else was written
        self.depth = 1


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


class RunDirLock:
    """``with RunDirLock(out): ...`` holds ``out/run.lock``; refuses with
    :class:`RunDirLockedError` (one line naming the holder) when another process holds it.

    Its one-line notices (a stale lock taken over, a file system without locks) go to
    ``console`` (stderr by default). ``command`` is what the holder is doing, for the refusal
    (default: this process's command line).
    """

    def __init__(self, directory: str | Path, *, command: str | None = None, console: Console | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self.console = console
        self.stale: LockHolder | None = None  # the dead holder whose lock was taken over
        self._key: str | None = None

    def warn(self, line: str) -> None:
        (self.console or Console(stderr=True)).print(f"[yellow]{escape(line)}", highlight=False)

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        key = str(self.directory.resolve())
        with _held_guard:
            held = _held.get(key)
            if held is not None:  # this process already holds it (eval scoring its own run)
                held.depth += 1
                self._key = key
                return
            try:
                _held[key] = self._lock(created)
            except BaseException:
                if created:
                    _remove_if_empty(self.directory)
                raise
            self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        with _held_guard:
            held = _held[self._key]
            held.depth -= 1
            if held.depth == 0:
                del _held[self._key]
                if held.fd is not None:
                    # unlink while still holding it: a process that opened the old file
                    # then finds it is not the file at the path, and opens the new one
                    held.path.unlink(missing_ok=True)
                    os.close(held.fd)
                if held.created_dir:  # a run refused before writing anything leaves no directory
                    _remove_if_empty(held.path.parent)
        self._key = None

    def _lock(self, created: bool) -> _Held:
        if fcntl is None:
            self.warn(f"cannot lock {self.path} on this system: a second process on this directory goes undetected")
            return _Held(None, self.path, created)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = LockHolder.parse(_read(fd))
                os.close(fd)
                who = holder.describe() if holder is not None else "another process (it has not written its name yet)"
                raise RunDirLockedError(
                    f"{self.directory} is in use by {who}; one run directory takes one process at a time: "
                    "wait for it to finish or stop it, or use another --out"
                ) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in _NO_LOCKS:
                    raise
                self.warn(f"cannot lock {self.path} ({err.strerror}): a second process on this directory goes undetected")
                return _Held(None, self.path, created)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released and removed the file between our open and lock
                os.close(fd)
                continue
            previous = _read(fd)
            if previous.strip():  # a holder wrote its name and never removed it: it died
                self.stale = LockHolder.parse(previous) or LockHolder()
                self.warn(f"took over the lock of {self.stale.describe()}, which is no longer running")
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": (self.command if self.command is not None else command_line())[:300],
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
            return _Held(fd, self.path, created)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty: the run wrote something, keep it


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""
