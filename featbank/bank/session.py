"""A write session on a bank: its lock held, and disk errors turned into one clear message.

A full disk or a read-only mount surfaces deep inside zarr as a bare ``OSError``. The bank is still
valid when that happens (chunks are replaced atomically, status is written after data, groups and
arrays are created before any row is committed and re-created when their creation was cut short),
so the user needs to know only what happened, where, and that re-running resumes.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import zarr

from featbank.bank.lock import BankLock, local_folder
from featbank.bank.store import StoreLike, bank_location
from featbank.errors import BankError

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class BankFullError(BankError):
    """The disk (or quota) under the bank ran out while writing; committed rows are intact."""


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in ``exc`` or its causes (zarr and dask may wrap it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _free_space(location: str) -> str:
    folder = local_folder(location)
    if folder is None:
        return "free space unknown on a remote store"
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB"


def explain_os_error(location: str, exc: BaseException) -> BankError | None:
    """A BankError saying what a disk-level failure means for the bank, or None for other errors."""
    error = _os_error_in(exc)
    if error is None:
        return None
    where = error.filename or location
    if error.errno in FULL:
        return BankFullError(f"no space left on the device while writing the bank {location} (at {where}; "
                             f"{_free_space(location)}). Rows committed before are intact and the bank "
                             f"is valid; free some space and re-run the same command to resume")
    if error.errno in READ_ONLY:
        return BankError(f"{location} cannot be written ({error.strerror} at {where}); it can be read (fit, "
                         f"info, status) but extract and import need a writable bank or copy")
    return None


@contextmanager
def write_session(bank: StoreLike, wait: float = 0.0) -> Iterator[None]:
    """Hold the write lock of the bank at ``bank`` (see :mod:`featbank.bank.lock`) for the enclosed
    writes and turn full-disk and read-only errors raised inside into a :class:`BankError`.

    A zarr Store object (a MemoryStore in a notebook) has no lock file: it is the caller's own.
    """
    owned = isinstance(bank, zarr.abc.store.Store)
    location = str(bank) if owned else bank_location(bank)
    try:
        with nullcontext() if owned else BankLock(location, wait=wait):
            yield
    except Exception as exc:
        explained = explain_os_error(location, exc)
        if explained is None:
            raise
        raise explained from exc


__all__ = ["BankFullError", "explain_os_error", "write_session"]
