"""The study's models, one file each, found by name (``models:`` and ``model.name``).

A model is a file here defining a CTRModel subclass (deepfm_lib.models.base) and naming it
``MODEL``; its file name is its registry name. ``available()`` lists the files without
importing MindSpore, so params.yaml is validated cheaply; ``build()`` imports the one asked
for. Adding a model is adding its file (and its name to ``models:`` in params.yaml).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepfm_lib.config import ModelConfig
    from deepfm_lib.models.base import CTRModel

_NOT_MODELS = {"base", "blocks"}


def available() -> list[str]:
    """Registered model names (the model files of this package), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_MODELS)


def model_class(name: str) -> type[CTRModel]:
    """The class registered as ``name``, with the names that exist if there is none."""
    if name not in available():
        raise ValueError(f"no model named {name!r}; registered: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").MODEL


def build(config: ModelConfig) -> CTRModel:
    """A fresh network for ``config`` (its ``name`` picks the model)."""
    return model_class(config.name)(config)
