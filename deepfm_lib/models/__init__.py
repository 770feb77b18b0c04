"""The study's models, one file each, found by name (``models:`` and ``model.name``).

A model is a file here defining a CTRModel subclass (deepfm_lib.models.base) and naming it
``MODEL``; its file name is its registry name. ``available()`` (registry.py) lists the files
without importing them or MindSpore, so params.yaml is validated cheaply; ``build()`` imports
the one asked for. Adding a model is adding its file (and its name to ``models:`` in params.yaml).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deepfm_lib.models.registry import available

if TYPE_CHECKING:
    from deepfm_lib.config import ModelConfig
    from deepfm_lib.models.base import CTRModel

__all__ = ["available", "build", "model_class", "use_graph_mode"]


def model_class(name: str) -> type[CTRModel]:
    """The class registered as ``name``, with the names that exist if there is none."""
    if name not in available():
        raise ValueError(f"no model named {name!r}; registered: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").MODEL


def build(config: ModelConfig) -> CTRModel:
    """A fresh network for ``config`` (its ``name`` picks the model), set to graph mode.

    MindSpore 2.10's eager (PyNative) kernels were built against NumPy 1.x and fail under
    the pinned NumPy 2 inside ``pyboost_reshape`` ("A module that was compiled using NumPy
    1.x cannot be run in NumPy 2"); graph mode runs the same networks bit for bit. A
    notebook that builds or loads a model therefore gets a working ``net(ids, weights)``
    without knowing this.
    """
    use_graph_mode()
    return model_class(config.name)(config)


def use_graph_mode() -> None:
    """Switch this process to graph mode, saying so when it was eager (see ``build``)."""
    import logging

    import mindspore as ms

    if ms.get_context("mode") != ms.GRAPH_MODE:
        logging.getLogger(__name__).info(
            "MindSpore set to graph mode: its eager kernels fail under NumPy 2 (pitfalls)"
        )
        ms.set_context(mode=ms.GRAPH_MODE)
