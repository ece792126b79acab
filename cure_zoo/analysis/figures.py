"""PNG figures of the analyses (matplotlib's Agg backend, written atomically, reproducible bytes)."""

from __future__ import annotations

from pathlib import Path

from ..errors import CureZooError
from ..io import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ModuleNotFoundError:  # an optional extra: cards and analyses draw figures, nothing else does
        raise CureZooError("drawing figures needs matplotlib: pip install 'cure-zoo[cards]'") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically and close it; no Software/date metadata, so the same inputs give
    the same bytes."""
    plt = pyplot()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return Path(path)
