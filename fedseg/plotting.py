"""Plot files: matplotlib without a display, figures written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedseg.files import atomic_write_bytes  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(figure: Any, path: str | Path) -> Path:
    """Lay out, write as PNG (atomically) and close ``figure``."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())
