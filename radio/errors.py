"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

import errno
import os
from typing import Optional


class RadioError(Exception):
    """A problem the user can fix: the message names the field/file/key and what would be valid."""

    # True when every rank raises the same message (the ranks agreed on it): printed once, not per rank.
    same_on_every_rank = False


class SpecError(RadioError):
    """The spec file or a command-line override is invalid."""

    same_on_every_rank = True


class DataError(RadioError):
    """A data source is missing, empty, or too corrupt to train on."""


class CheckpointError(RadioError):
    """A checkpoint file is missing, corrupt, unsafe, or does not match the model."""


def on_every_rank(error: RadioError) -> RadioError:
    """Mark ``error`` as raised alike on every rank (see ``RadioError.same_on_every_rank``)."""
    error.same_on_every_rank = True
    return error


def disk_full_message(error: OSError) -> str:
    """One line for "no space left on device" wherever it struck (metrics, logs, config)."""
    import shutil

    where = os.path.dirname(os.path.abspath(error.filename)) if error.filename else os.getcwd()
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the device holding {where} ({free}) while writing {error.filename or 'a file'}. "
        "Checkpoints are written atomically, so the newest complete one is intact: free some space and run the "
        "same command again to resume from it."
    )


def user_error_message(error: Exception) -> Optional[str]:
    """The one-line message for an error the user can act on (a ``RadioError``, a full disk), else None."""
    if isinstance(error, RadioError):
        return str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return disk_full_message(error)
    return None
