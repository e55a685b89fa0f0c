"""One writer at a time per bank: a lock file taken for a whole write session.

Why a lock and not concurrent registration: registering an item reads the item count and appends
after it, creating a group writes several arrays and then its attributes, and a commit rewrites
whole chunks (read, modify, replace). Two processes doing any of these at once lose each other's
writes silently: rows marked OK end up holding another video's features. Making each of those steps
safe under concurrency would need compare-and-swap on every store; one lock per bank is simple,
holds on every local file system and is best effort on object stores (see below).

The lock is ``<bank>/.featbank.lock``, created exclusively (``O_CREAT | O_EXCL``) and holding JSON
with the holder's host, pid, start time and command, so a refusal can say who holds the bank. A
session is the whole write: registration, group creation and every commit (the workers of a
distributed run write under the lock their client holds). Readers (``fit``, ``info``, ``status``,
``validate``) never take it.

Stale locks: a holder on this host whose pid is gone (a ``kill -9``, a crash) is taken over with a
warning. A holder on another host cannot be checked from here; ``featbank validate --break-lock``
removes its lock once you know that run is gone.

fsspec URLs: ``file://`` banks are local folders and get the same exclusive create. Other
protocols get a best-effort lock through fsspec: it is refused when the lock object exists, then
written and read back, which narrows but cannot close the race of two writers starting in the
same instant (object stores offer no exclusive create through fsspec). Run one writer per bank
there.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path

from featbank.errors import BankError

LOCK_NAME = ".featbank.lock"
POLL_SECONDS = 0.5


class BankLockedError(BankError):
    """Another writer holds the bank (exit 3, like every bank problem)."""


def local_folder(location: str) -> Path | None:
    """The local folder of a bank location (a path or a ``file://`` URL), None for remote URLs."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    return None if "://" in location else Path(location)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')} "
            f"({holder.get('command', '?')})")


class BankLock:
    """The write lock of the bank at ``location`` (a local path or an fsspec URL).

    ``wait`` seconds to wait for another writer to finish (0: refuse at once). Re-entrant within a
    process (nested sessions of one process share it). Use as a context manager.
    """

    _held: dict[str, tuple[int, str]] = {}  # lock file → (nesting depth, token written), in this process

    def __init__(self, location: str, wait: float = 0.0, command: str | None = None) -> None:
        self.location = location
        self.wait = wait
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        folder = local_folder(location)
        self._folder = folder
        self._path = str(folder / LOCK_NAME) if folder is not None else f"{location.rstrip('/')}/{LOCK_NAME}"
        self._token = uuid.uuid4().hex

    # -------------------------------------------------------------- public
    def __enter__(self) -> BankLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def holder(self) -> dict | None:
        """Who holds the lock now (None when nobody does or the record is unreadable)."""
        try:
            text = self._read()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return {}

    def acquire(self) -> None:
        if self._path in BankLock._held:
            depth, token = BankLock._held[self._path]
            BankLock._held[self._path] = (depth + 1, token)
            return
        deadline = time.monotonic() + self.wait
        while True:
            if self._try_create():
                BankLock._held[self._path] = (1, self._token)
                return
            holder = self.holder()
            if holder is None:  # released between our attempt and the read: try again
                continue
            if self._is_stale(holder):
                warnings.warn(f"{self.location}: taking over the write lock of {describe_holder(holder)}, "
                              f"which is no longer running", stacklevel=2)
                self._take_over(holder)
                continue
            if time.monotonic() >= deadline:
                raise BankLockedError(
                    f"{self.location} is being written by {describe_holder(holder)}; one writer at a time "
                    f"per bank. Wait for it (or pass --wait-lock SECONDS), or, if that run is gone, "
                    f"`featbank validate --bank {self.location} --break-lock`")
            time.sleep(POLL_SECONDS)

    def release(self) -> None:
        depth, token = BankLock._held.get(self._path, (0, ""))
        if depth > 1:
            BankLock._held[self._path] = (depth - 1, token)
            return
        BankLock._held.pop(self._path, None)
        if depth and (self.holder() or {}).get("token") == token:
            self.break_lock()

    def break_lock(self) -> None:
        """Remove the lock file whoever holds it (for a holder known to be gone)."""
        try:
            if self._folder is not None:
                os.unlink(self._path)
            else:
                self._fs().rm(self._path)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------- helpers
    def _take_over(self, stale: dict) -> None:
        """Remove a dead holder's lock, and only that one: two waiters may both find it stale, and
        the second must not remove the lock the first has just created. A rename is atomic, so the
        lock moved aside is checked to be the stale one, and put back if it is not."""
        if self._folder is None:
            self.break_lock()  # best effort, like the rest of the fsspec lock
            return
        aside = f"{self._path}.{self._token}"
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(Path(aside).read_text())
        except ValueError:
            moved = {}
        if moved != stale:
            try:
                os.link(aside, self._path)
            except FileExistsError:
                pass
        os.unlink(aside)

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self._token,
                           "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                           "command": self.command}).encode()

    def _is_stale(self, holder: dict) -> bool:
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.location)[0]

    def _read(self) -> str:
        if self._folder is not None:
            return Path(self._path).read_text()
        fs = self._fs()
        if not fs.exists(self._path):
            raise FileNotFoundError(self._path)
        return fs.cat_file(self._path).decode()

    def _try_create(self) -> bool:
        """Create the lock file if nobody holds it; False when somebody does."""
        record = self._record()
        if self._folder is None:
            fs = self._fs()
            if fs.exists(self._path):
                return False
            fs.pipe_file(self._path, record)
            return json.loads(fs.cat_file(self._path)).get("token") == self._token
        if self._folder.is_file():
            raise BankError(f"{self.location} is a file, not a feature bank; give a bank folder, or a new "
                            f"path to create one")
        self._folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(record)
        except OSError:  # a full disk: leave no empty lock behind
            os.unlink(self._path)
            raise
        return True


__all__ = ["BankLock", "BankLockedError", "LOCK_NAME", "describe_holder", "local_folder"]
