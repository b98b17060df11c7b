"""Exceptions that carry the exit code of the BIDS-Apps execution specification.

Every failure that a user can cause is one of these, with a message that names the file
and what is wrong with it.  The command line maps them to exit codes; nothing else does.
"""
from __future__ import annotations

import os

EXIT_OK = 0
EXIT_PARTICIPANT_FAILED = 1
EXIT_BIDS_INVALID = 16
EXIT_USAGE = 64  # EX_USAGE
EXIT_DATA = 65  # EX_DATAERR
EXIT_NO_INPUT = 66  # EX_NOINPUT
EXIT_CANT_CREATE = 73  # EX_CANTCREAT
EXIT_IO = 74  # EX_IOERR


class BidsMdppError(Exception):
    """Base class: a failure with a clear message and an exit code."""

    exit_code = EXIT_PARTICIPANT_FAILED


class UsageError(BidsMdppError):
    """Command-line arguments that do not make sense together (exit 64)."""

    exit_code = EXIT_USAGE


class BidsValidationError(BidsMdppError):
    """The input dataset failed BIDS validation (exit 16)."""

    exit_code = EXIT_BIDS_INVALID


class InputDataError(BidsMdppError):
    """An input file exists but its content is unusable (exit 65).

    ``path`` names the offending file; the message always contains it.
    """

    exit_code = EXIT_DATA

    def __init__(self, path: os.PathLike | str | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ModelError(InputDataError):
    """A model directory or weights file that is not a usable model (exit 65)."""


class NoInputError(BidsMdppError):
    """Nothing matched: no such dataset, participant, session or contrast (exit 66)."""

    exit_code = EXIT_NO_INPUT


class OutputError(BidsMdppError):
    """The output cannot be created or written (exit 73, or 74 for a full disk)."""

    exit_code = EXIT_CANT_CREATE

    def __init__(self, message: str, *, disk_full: bool = False):
        super().__init__(message)
        if disk_full:
            self.exit_code = EXIT_IO
