"""Typed, validated view of params.yaml.

params.yaml is the study's single source of settings. Every stage loads it through
`load()`, so a typo, a wrong type or an impossible value stops the stage before any work,
with one message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEVICES = ("CPU", "GPU", "Ascend")


class ParamsError(ValueError):
    """params.yaml is unreadable or holds a setting the study cannot use."""


class _Section(BaseModel):
    # extra="forbid": an unknown key is almost always a typo that would be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Section):
    rows: Annotated[int, Field(gt=0)] = 100_000
    scale: Annotated[float, Field(gt=0)] = 0.01
    seed: int = 2020


class DataParams(_Section):
    source: Literal["synthetic", "criteo"] = "synthetic"
    criteo_path: str = "data/criteo/train.txt"
    on_bad_line: Literal["error", "skip"] = "error"
    synthetic: SyntheticParams = SyntheticParams()


class PreprocessParams(_Section):
    protocol: Literal["zoo", "clean"] = "zoo"
    threshold: Annotated[int, Field(ge=0)] = 100
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    valid_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    split_seed: int = 2020
    shards: Annotated[int, Field(gt=0, le=64)] = 2


class ModelParams(_Section):
    emb_dim: Annotated[int, Field(gt=0)] = 80
    deep_layers: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [
        1024,
        512,
        256,
        128,
    ]
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    init_std: Annotated[float, Field(gt=0)] = 0.01
    l2: Annotated[float, Field(ge=0)] = 8e-5


class TrainParams(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 16_000
    epochs: Annotated[int, Field(gt=0)] = 5
    lr: Annotated[float, Field(gt=0)] = 5e-4
    eps: Annotated[float, Field(gt=0)] = 5e-8
    loss_scale: Annotated[float, Field(ge=1)] = 1.0
    checkpoint_every_steps: Annotated[int, Field(ge=0)] = 0
    keep_checkpoints: Annotated[int, Field(gt=0)] = 3


class EvaluateParams(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 16_000


class TargetParams(_Section):
    device: Literal["CPU", "GPU", "Ascend"] = "CPU"


class Params(_Section):
    seed: int = 1001
    data: DataParams = DataParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    targets: Annotated[dict[str, TargetParams], Field(min_length=1)] = {"CPU": TargetParams()}

    def target(self, name: str) -> TargetParams:
        """The settings of one device target, with an error listing the ones that exist."""
        if name not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise ParamsError(f"targets.{name}: no such target; params.yaml defines: {known}")
        return self.targets[name]


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (a typo?)"
    value = err.get("input")
    return f"{source}: {key} = {value!r}: {err['msg']}"


def parse(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; `source` names it in error messages."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None
    if params.data.source == "criteo" and not Path(params.data.criteo_path).is_file():
        raise ParamsError(
            f"{source}: data.criteo_path = {params.data.criteo_path!r}: no such file; "
            "point it at the Kaggle Criteo train.txt (plain or .gz) or set data.source: synthetic"
        )
    return params


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file (run from the repository root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw or {}, source=str(path))
