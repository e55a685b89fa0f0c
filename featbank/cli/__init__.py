"""The ``featbank`` command line: extract → fit → predict, plus bank inspection and the demo.

Exit codes: 0 success · 1 error (also a path the system refuses: under a regular file, read-only,
full disk) · 2 invalid manifest or usage · 3 bank problem ·
4 missing/mismatching weights · 6 run completed but some items failed (recorded in the bank) ·
130 interrupted.

Each command family lives in its own module (``extract``, ``learn``, ``score``, ``weights``, ``io``, ``bank``,
``demo``) with its ``add_parsers`` and handlers; shared options are in ``options``. Nothing heavy
(torch, zarr, pandas, scikit-learn) is imported until a handler runs, so ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featbank import __version__
from featbank.cli import bank, demo, extract, io, learn, recipe, score, weights
from featbank.cli.options import DEFAULT_BANK, EXIT_ITEMS_FAILED
from featbank.errors import FeatbankError

__all__ = ["DEFAULT_BANK", "EXIT_ITEMS_FAILED", "build_parser", "main"]

EPILOG = """\
typical session:
  featbank extract --manifest train.csv --extractor handcrafted,audio
  featbank fit     --manifest train.csv --features handcrafted,audio --targets overall --stack
  featbank predict --manifest test.csv  --model runs/fit/model --out submission.csv
  featbank info                              # what the bank holds

exit codes: 0 ok, 1 error (also a path that cannot be read or written),
            2 invalid manifest/usage, 3 bank problem, 4 missing weights,
            6 finished but some items failed (see `featbank info --failures`),
            130 interrupted (committed rows are kept)
"""

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

# In the order the commands are listed by --help: the workflow first, then data, bank, demo.
_FAMILIES = (extract, learn, recipe, score, weights, io, bank, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featbank", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Decode each video once, bank frozen features in Zarr, and fit regressor "
                    "stacks scored the way quality-assessment challenges score them.")
    parser.add_argument("--version", action="version", version=f"featbank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in _FAMILIES:
        family.add_parsers(sub)
    return parser


def describe_os_error(exc: OSError) -> str:
    """What an operating-system refusal means for the path the user gave, in one line.

    These come from paths a user chose (an output under a regular file, a folder where a file is
    expected, a read-only or full disk), never from featbank's logic, so they get a message naming
    the path and what to change instead of a traceback.
    """
    path = exc.filename if exc.filename is not None else "?"
    reasons = {
        errno.ENOTDIR: "a part of this path is a regular file, not a folder",
        errno.EEXIST: "it exists and is a regular file, but a folder is needed there",
        errno.EISDIR: "it is a folder, but a file is expected",
        errno.ENOENT: "no such file or folder",
        errno.EACCES: "permission denied (check the owner and mode, or choose another path)",
        errno.EPERM: "operation not permitted (check the owner and mode, or choose another path)",
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
    }
    reason = reasons.get(exc.errno, exc.strerror or type(exc).__name__)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename is not None:
        reason += f" ({free_space(Path(exc.filename))} free there)"
    return f"{path}: {reason}"


def free_space(path: Path) -> str:
    """Free space on the file system holding ``path`` (its nearest existing parent), for messages."""
    for folder in (path, *path.parents):
        if folder.exists():
            return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    return "unknown"


def quiet_abandoned_io() -> None:
    """Silence what zarr's interrupted I/O reports while the interpreter shuts down.

    zarr runs its reads and writes on an asyncio loop in a background thread; Ctrl-C stops the
    main thread's wait, not those tasks, so at exit asyncio logs "Task was destroyed but it is
    pending!", Python warns "coroutine ... was never awaited", and a coroutine finalised after the
    loop closed reports "Exception ignored in ... Event loop is closed" through the unraisable
    hook. The run has already been reported as interrupted, and every chunk file is written
    atomically (an abandoned write leaves the previous version), so this noise tells the user
    nothing and is turned off; only on this path, so real unraisable errors stay visible elsewhere.
    """
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
    sys.unraisablehook = _ignore_unraisable


def _ignore_unraisable(unraisable: object) -> None:
    """Drop an exception Python cannot raise (see :func:`quiet_abandoned_io`)."""


WRITES_ROWS = frozenset({"extract", "predict", "demo", "import"})
"""Commands that commit bank rows as they go: an interrupted one resumes where it stopped."""


INTERRUPT_GRACE_S = 45.0
"""Seconds an interrupted run has to stop its workers and exit before it is ended forcibly."""


@contextmanager
def interrupts_end_the_run() -> Iterator[None]:
    """Let SIGINT and SIGTERM end any command the same way, and in bounded time.

    Python's default SIGTERM ends the process at once: a cluster's workers, or joblib's worker
    processes of a ``fit``, were left running, and the bank's lock to be taken over as stale. As
    KeyboardInterrupt it goes through the Ctrl-C path: workers stopped, lock released, exit 130,
    committed rows kept. That path runs third-party clean-up (loky's executor, dask's cluster,
    their interpreter-exit hooks), which once in a CI run hung past 120 s after a SIGTERM; so the
    first signal also arms a watchdog that kills the run's child processes and exits with 130
    once :data:`INTERRUPT_GRACE_S` has passed. Nothing is lost by that: every bank row is
    committed atomically. Only the main thread can set handlers; elsewhere (an embedding
    program) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A SIGINT the parent chose to ignore (a job started with `&` by a script) stays ignored.
    signals = [signal.SIGTERM] + [signal.SIGINT] * (signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_watchdog: threading.Timer | None = None


def _raise_interrupt(signum: int, frame: object) -> None:
    global _watchdog
    if _watchdog is None:
        _watchdog = threading.Timer(INTERRUPT_GRACE_S, _end_now)
        _watchdog.daemon = True  # runs through interpreter shutdown, never holds it up
        _watchdog.start()
    raise KeyboardInterrupt(f"signal {signum}")


def _end_now() -> None:
    """The watchdog's last resort: kill the child processes clean-up did not stop, exit 130."""
    for child in multiprocessing.active_children():
        child.kill()
    sys.stderr.write(f"featbank: interrupted; clean-up did not finish in {INTERRUPT_GRACE_S:.0f} s, "
                     "ended without it (committed rows are kept)\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interrupts_end_the_run():
            return args.handler(args)
    except FeatbankError as exc:
        print(f"featbank {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"featbank {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        quiet_abandoned_io()
        resumable = "; committed rows are kept, re-run to resume" if args.command in WRITES_ROWS else ""
        print(f"featbank: interrupted{resumable}", file=sys.stderr)
        return EXIT_INTERRUPTED
