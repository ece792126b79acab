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
