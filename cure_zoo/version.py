"""The package's version, written here only (``pyproject.toml`` reads it, as timm's does), and the library
versions that an evaluation's protocol and a training run's ``config.json`` record."""

from __future__ import annotations

import importlib
import platform
from importlib import metadata

__version__ = "0.1.0"

# what a result depends on; each recorded as its module's ``__version__`` (the running build, e.g. torch's
# ``+cu130``), else the installed distribution's version
LIBRARIES = ("torch", "torchvision", "timm", "safetensors", "pyautoattack", "numpy")


def library_versions() -> dict[str, str]:
    """``{"cure_zoo": ..., "torch": ..., ..., "python": ...}``; ``"not installed"`` for a missing library."""
    versions = {"cure_zoo": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", None) or metadata.version(name)
        except (ImportError, metadata.PackageNotFoundError):
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions
