"""User-facing errors.

Every error a user can cause derives from :class:`CureZooError`. Its message is one line that says what was
wrong and what to do; the CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class CureZooError(Exception):
    """A mistake in input or environment that the user can fix (bad name, missing file, bad value)."""


class UnknownModelError(CureZooError, RuntimeError):
    """A model name that is not registered."""


class PretrainedWeightsError(CureZooError, RuntimeError):
    """Pretrained weights were asked for but cannot be had (not published, offline, or unreachable)."""


class WeightsIntegrityError(CureZooError, RuntimeError):
    """Downloaded or local weights do not match their published sha256, or are truncated."""


class DatasetError(CureZooError, ValueError):
    """A dataset that is unknown, not on disk, or smaller than asked for."""


class OutputPathError(CureZooError):
    """An output path the zoo may not write: not a regular file, in no writable folder, or one of the inputs."""


def user_error_message(err: BaseException) -> str | None:
    """The one-line message the command line prints (exit status 2) for an error a user can fix, else None.

    ``CureZooError`` says what was wrong itself; an ``OSError`` that reaches the command line (a full disk, a
    read-only folder, a file in the way of a folder, a refused connection) is named with its path. Anything
    else is a bug in cure_zoo and keeps its traceback."""
    if isinstance(err, CureZooError):
        text = str(err)
    elif isinstance(err, OSError):
        reason = err.strerror or str(err) or type(err).__name__
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        text = f"{where}: {reason} (check the path, its permissions and the free space)" if where else reason
    else:
        return None
    return " ".join(text.split()) or type(err).__name__
