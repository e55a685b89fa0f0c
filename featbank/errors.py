"""Error types with the exit code the CLI maps them to.

Every error a user can cause (bad manifest, missing weights, unreadable bank) derives from
:class:`FeatbankError`, so the CLI can print one clear message and exit with a stable code instead
of a traceback. Programming errors stay ordinary exceptions and keep their tracebacks.
"""

from __future__ import annotations


class FeatbankError(Exception):
    """A problem the user can fix; the CLI prints ``str(error)`` and exits with ``exit_code``."""

    exit_code = 1


class ManifestError(FeatbankError):
    """The manifest is malformed; the message lists every offending row, not just the first."""

    exit_code = 2


class BankError(FeatbankError):
    """The feature bank is missing, inconsistent, or lacks what a command needs."""

    exit_code = 3


class WeightsMissingError(FeatbankError):
    """A pretrained checkpoint is absent or its checksum does not match."""

    exit_code = 4


class MediaError(FeatbankError):
    """One item cannot be decoded. Extraction records it per item and carries on."""

    exit_code = 5


class SubmissionError(FeatbankError):
    """A submission, label or pair file cannot be scored or written as the organisers expect
    (missing, duplicate or NaN items, unknown pair items, labels out of range): bad input, exit 2."""

    exit_code = 2


class UsageError(FeatbankError):
    """Options that contradict each other or name nothing valid; exit 2 like argparse's own errors."""

    exit_code = 2


class ItemsFailedError(FeatbankError):
    """The run finished, but some items have no result (their extraction failed); they are listed."""

    exit_code = 6
