"""Which model names exist: the model files of this package, listed without importing them.

A leaf module: config.py checks params.yaml's model names with it, and the package's
``build()`` picks the file by it, while every model imports config.py for its
``ModelConfig``; with the list here and nothing imported, that is no circle.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

_NOT_MODELS = {"__init__", "base", "blocks", "registry"}


def available() -> list[str]:
    """Registered model names (the model files beside this one), sorted."""
    folder = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in _NOT_MODELS)
