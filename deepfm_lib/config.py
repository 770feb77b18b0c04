"""Typed, validated view of params.yaml.

params.yaml is the study's single source of settings. Every stage loads it through
`load()`, so a typo, a wrong type or an impossible value stops the stage before any work,
with one message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from deepfm_lib.models.registry import available

DEVICES = ("CPU", "GPU", "Ascend")


class ParamsError(ValueError):
    """params.yaml is unreadable or holds a setting the study cannot use."""


class _Section(BaseModel):
    # extra="forbid": an unknown key is almost always a typo that would be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherParams(_Section):
    """The shape of the synthetic labels' ground truth (deepfm_lib.data.synthetic).

    Each weight multiplies one term of the teacher's logit, so the kind of signal the labels
    carry is a setting of the experiment: ``linear`` the first-order term, ``pairwise`` the
    factorization-machine term over all fields, ``higher_order`` the tanh MLP over the same
    factors. ``mlp_gain`` scales the MLP's pre-activations: at 1 its tanh units stay near
    their linear range (the term is then mostly first-order in disguise); larger gains make
    it genuinely higher-order. ``dense`` is what the teacher sees of a dense value: log1p
    (log1p(x) / (mu + 2), out of a linear model's reach under the x / max preprocessing) or
    linear (x / the field's clip bound: proportional, field by field, to the x / max the
    zoo's preprocessing feeds a model, so a linear model can fit it). All weights and the
    gain 1 with log1p is the study's original teacher, bit for bit.
    """

    linear: Annotated[float, Field(ge=0)] = 1.0
    pairwise: Annotated[float, Field(ge=0)] = 1.0
    higher_order: Annotated[float, Field(ge=0)] = 1.0
    mlp_gain: Annotated[float, Field(gt=0)] = 1.0
    dense: Literal["log1p", "linear"] = "log1p"

    @model_validator(mode="after")
    def _some_signal(self) -> TeacherParams:
        if self.linear == self.pairwise == self.higher_order == 0:
            raise ValueError("every term's weight is 0; the labels would carry no signal")
        return self


class SyntheticParams(_Section):
    rows: Annotated[int, Field(gt=0)] = 100_000
    scale: Annotated[float, Field(gt=0)] = 0.01
    seed: int = 2020
    # The study's teacher, by name; `teachers` defines every named teacher once (the sweep
    # runs several of them).
    teacher: str = "linear_pairwise"
    teachers: Annotated[dict[str, TeacherParams], Field(min_length=1)] = {
        "linear_pairwise": TeacherParams()
    }

    def shape(self, name: str | None = None) -> TeacherParams:
        """One named teacher's settings (the study's own by default)."""
        name = self.teacher if name is None else name
        if name not in self.teachers:
            raise ParamsError(
                f"data.synthetic.teacher = {name!r}: no such teacher; data.synthetic.teachers "
                f"defines: {', '.join(self.teachers)}"
            )
        return self.teachers[name]


class MovieLensParams(_Section):
    """MovieLens-100K's protocol (deepfm_lib.data.movielens): RecBole's context-aware one."""

    # A folder holding ml-100k.inter/.user/.item, or the recbole wheel; null: the pinned
    # wheel, fetched with pip into the cache (~/.cache/deepfm-repro) when missing.
    path: str | None = None
    label_threshold: Annotated[int, Field(ge=2, le=5)] = 4  # positive: rating >= this
    drop_neutral: bool = False  # true: ratings of 3 dropped (RecBole's ml-1m benchmark)
    threshold: Annotated[int, Field(ge=0)] = 0  # keep a value seen in train more often


class DataParams(_Section):
    source: Literal["synthetic", "criteo", "movielens"] = "synthetic"
    # A file, or a folder holding train.txt or train.txt.gz (the default folder ships a
    # README, so the path exists and DVC can track it as a dependency in every mode).
    criteo_path: str = "data/criteo"
    on_bad_line: Literal["error", "skip"] = "error"
    synthetic: SyntheticParams = SyntheticParams()
    movielens: MovieLensParams = MovieLensParams()


class PreprocessParams(_Section):
    """The settings that decide the preprocessed data (deepfm_lib.data.preprocess); recorded
    in its stats.json. Declared and checked once, here, for params.yaml and the library."""

    protocol: Literal["zoo", "clean"] = "zoo"
    threshold: Annotated[int, Field(ge=0)] = 100  # keep a value seen more often (strictly)
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    valid_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1  # clean protocol only
    split_seed: int = 2020
    shards: Annotated[int, Field(gt=0, le=64)] = 2  # MindRecord files per split
    # A dense value's weight: max as the zoo (x / the train maximum), or log1p
    # (log1p(x) / log1p(maximum), as the Criteo competition's winners and later papers);
    # log1p is a clean-protocol setting.
    dense: Literal["max", "log1p"] = "max"
    rows_per_record: Annotated[int, Field(ge=1)] = 1000  # the zoo's rows per MindRecord record

    @model_validator(mode="after")
    def _protocol_allows(self) -> PreprocessParams:
        if self.protocol == "clean" and self.test_fraction + self.valid_fraction >= 1:
            raise ValueError(
                f"test_fraction {self.test_fraction} + valid_fraction {self.valid_fraction} "
                "leave no rows for train"
            )
        if self.protocol == "zoo" and self.dense != "max":
            raise ValueError(
                f"dense = {self.dense!r}: the zoo protocol is the zoo's own semantics "
                "(x / max); use protocol: clean for another dense transform"
            )
        return self

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "test") if self.protocol == "zoo" else ("train", "valid", "test")


Widths = Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)]


class ModelParams(_Section):
    """A network's settings as params.yaml gives them (a preset's, or the overrides')."""

    emb_dim: Annotated[int, Field(gt=0)] = 80
    deep_layers: Widths = [1024, 512, 256, 128]
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    init_std: Annotated[float, Field(gt=0)] = 0.01
    l2: Annotated[float, Field(ge=0)] = 8e-5


class ModelConfig(ModelParams):
    """One network, fully resolved: the settings plus what the data and the target decide.

    ``name`` picks the model from the registry (deepfm_lib.models); the defaults are the
    zoo's DeepFM except ``vocab_size`` and ``field_size``, which come from the preprocessed
    data (stats.json: its vocabulary and its schema's row width, 39 for Criteo). Widths are
    a tuple so the config is hashable.
    """

    vocab_size: Annotated[int, Field(gt=0)]
    field_size: Annotated[int, Field(gt=0)]
    name: str = "deepfm"
    deep_layers: Annotated[tuple[Annotated[int, Field(gt=0)], ...], Field(min_length=1)] = (
        1024,
        512,
        256,
        128,
    )
    # Precision of the MLP's matrix multiplies (embeddings and losses stay float32, as in the
    # zoo, whose MLP runs in float16 on Ascend). MindSpore 2.10 has no bf16 MatMul on CPU.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


Seeds = Annotated[list[int], Field(min_length=1)]


class TrainParams(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 16_000
    epochs: Annotated[int, Field(gt=0)] = 5  # with patience: the most epochs a run may take
    # Early stopping: stop after this many evaluated epochs without a better AUC on the
    # evaluation split (validation under the clean protocol); 0 runs every epoch (the zoo).
    patience: Annotated[int, Field(ge=0)] = 0
    lr: Annotated[float, Field(gt=0)] = 5e-4
    eps: Annotated[float, Field(gt=0)] = 5e-8
    loss_scale: Annotated[float, Field(ge=1)] = 1.0
    checkpoint_every_steps: Annotated[int, Field(ge=0)] = 0
    keep_checkpoints: Annotated[int, Field(gt=0)] = 3
    # Lazy Adam on the de-duplicated table rows each batch touches, L2 on those rows only:
    # faster, but a different optimisation from the zoo's (deepfm_lib.engine.step).
    lazy_adam: bool = False
    # The embedding side of the zoo's step: fused C kernels on CPU (deepfm_lib.engine.kernels)
    # or MindSpore's; auto = fused on the CPU target when a C compiler builds them.
    kernels: Literal["auto", "fused", "mindspore"] = "auto"
    # One run per seed; a seed sets the initial weights and the shuffling order.
    seeds: Seeds = [1001]


class TrainConfig(TrainParams):
    """One training run: the merged settings and the one seed it runs with."""

    epochs: Annotated[int, Field(ge=0)] = 5  # 0: only score the initial weights (tests)
    seed: int = 1001


class EvaluateParams(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 16_000


def _overrides(section: type[_Section]) -> type[_Section]:
    """The same keys and checks as ``section``, each optional: null keeps the preset's value.

    Built from the section so a new setting is declared once, with its check once.
    """
    fields = {}
    for name, info in section.model_fields.items():
        kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[name] = (kind | None, None)
    return create_model(f"{section.__name__}Overrides", __base__=_Section, **fields)


ModelOverrides = _overrides(ModelParams)
TrainOverrides = _overrides(TrainParams)


class Preset(_Section):
    """A complete model + training configuration (the zoo's, the paper's, a laptop's)."""

    model: ModelParams
    train: TrainParams


class ClusterParams(_Section):
    """Where a job's ranks run: ``workers`` processes on each of ``nodes`` machines, started
    by msrun (deepfm_lib.engine.parallel); 1 x 1 trains in the calling process."""

    workers: Annotated[int, Field(ge=1)] = 1  # processes per node (one per GPU / NPU)
    nodes: Annotated[int, Field(ge=1)] = 1  # machines
    node_rank: Annotated[int, Field(ge=0)] = 0  # this machine's index; 0 hosts the scheduler
    master_addr: Annotated[str, Field(min_length=1)] = "127.0.0.1"  # node 0's address
    master_port: Annotated[int, Field(ge=1024, le=65535)] = 8118  # msrun scheduler's port

    @model_validator(mode="after")
    def _node_rank_below_nodes(self) -> ClusterParams:
        if self.node_rank >= self.nodes:
            raise ValueError(
                f"node_rank = {self.node_rank}: must be below nodes = {self.nodes} "
                "(machines are numbered 0 .. nodes - 1)"
            )
        return self

    @property
    def world_size(self) -> int:
        """Ranks in the job: workers on each of the nodes."""
        return self.workers * self.nodes

    @property
    def local_ranks(self) -> range:
        """Global ranks of this node's workers (msrun numbers them node by node)."""
        start = self.node_rank * self.workers
        return range(start, start + self.workers)


class TargetParams(ClusterParams):
    """One device target: where it trains, in what precision, any training overrides, and
    its cluster (train.batch_size is the GLOBAL batch over all ranks)."""

    device: Literal["CPU", "GPU", "Ascend"] = "CPU"
    # bf16/fp16 apply to the MLP's matrix multiplies; MindSpore 2.10 has no bf16 MatMul on CPU.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    train: TrainOverrides = TrainOverrides()


class CurveParams(_Section):
    """The opt-in learning curve (stage `curve`): test AUC against training rows.

    Each point draws its own synthetic data from the study's teacher (data.synthetic's seed
    and scale) and is preprocessed, trained and scored like the study; `model`, `train` and
    `threshold` override the study's settings for the curve alone (capacity, epochs, the
    values folded into out-of-vocabulary ids).
    """

    enabled: bool = False
    rows: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [
        100_000,
        300_000,
        1_000_000,
        3_000_000,
    ]
    models: Annotated[list[str], Field(min_length=1)] = ["fm", "deepfm"]
    seed: int = 1001
    target: str = "CPU"
    threshold: Annotated[int, Field(ge=0)] | None = None
    model: ModelOverrides = ModelOverrides()
    train: TrainOverrides = TrainOverrides()


class SweepParams(_Section):
    """The opt-in teacher sweep (stage `sweep`): the study once per named teacher.

    For each teacher of ``teachers`` (names from data.synthetic.teachers) it draws
    ``rows`` lines, preprocesses them with the study's settings, tunes every model of
    ``models`` on the evaluation split with tune.grid, trains every seed and scores test
    once, with the main table's statistics against DeepFM (which ``models`` must hold).
    """

    enabled: bool = False
    teachers: Annotated[list[str], Field(min_length=1)] = ["linear_pairwise"]
    rows: Annotated[int, Field(gt=0)] | None = None  # lines per teacher; null: data.synthetic.rows
    models: Annotated[list[str], Field(min_length=1)] | None = None  # null: the study's models
    target: str = "CPU"


class RealDataParams(_Section):
    """The study on MovieLens-100K beside the main one (stage `movielens`): the same models,
    tuning grid, seeds and statistics, on data.movielens's protocol."""

    enabled: bool = True
    models: Annotated[list[str], Field(min_length=1)] | None = None  # null: the study's models
    target: str = "CPU"


# The settings a tuning grid may vary: any model or training setting except the seeds.
GRID_KEYS = tuple(k for k in (*ModelParams.model_fields, *TrainParams.model_fields) if k != "seeds")


class TuneParams(_Section):
    """The per-model search (stage tune@<model>-<target>), chosen on the evaluation split.

    ``grid`` maps a model to the values tried per setting; every combination is one point,
    trained on ``seed`` with early stopping (train.patience, train.epochs as the maximum).
    A model without a grid runs one point: the preset's settings.
    """

    seed: int | None = None  # null: the first of train.seeds
    grid: dict[str, dict[str, Annotated[list[Any], Field(min_length=1)]]] = {}


class ReferenceParams(_Section):
    """scikit-learn's LogisticRegression on the study's splits (stage `reference`)."""

    enabled: bool = True
    lr_C: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [0.01, 0.1, 1.0]
    # Above this many training rows the one-hot fit is skipped (45M Criteo rows need ~30 GB).
    max_rows: Annotated[int, Field(gt=0)] = 5_000_000


class Params(_Section):
    # The study's models, one train@<model>-<target> stage each (names: deepfm_lib.models).
    models: Annotated[list[str], Field(min_length=1)] = ["deepfm"]
    preset: str = "small"
    presets: dict[str, Preset] = {}
    data: DataParams = DataParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelOverrides = ModelOverrides()
    train: TrainOverrides = TrainOverrides()
    evaluate: EvaluateParams = EvaluateParams()
    targets: Annotated[dict[str, TargetParams], Field(min_length=1)] = {"CPU": TargetParams()}
    curve: CurveParams = CurveParams()
    sweep: SweepParams = SweepParams()
    movielens: RealDataParams = RealDataParams()
    tune: TuneParams = TuneParams()
    reference: ReferenceParams = ReferenceParams()

    def target(self, name: str) -> TargetParams:
        """The settings of one device target, with an error listing the ones that exist."""
        if name not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise ParamsError(f"targets.{name}: no such target; params.yaml defines: {known}")
        return self.targets[name]

    def model_settings(self) -> ModelParams:
        """The preset's model settings with the `model:` overrides applied."""
        base = self.presets[self.preset].model
        return base.model_copy(update=self.model.model_dump(exclude_none=True))

    def network_config(
        self, name: str, target: str, vocab_size: int, field_size: int
    ) -> ModelConfig:
        """One network: the settings, the model's name, the data's vocabulary and row width
        (stats.json), the target's precision."""
        return ModelConfig(
            **self.model_settings().model_dump(),
            name=name,
            vocab_size=vocab_size,
            field_size=field_size,
            precision=self.target(target).precision,
        )

    def train_settings(self, target: str | None = None) -> TrainParams:
        """The preset's training settings, then `train:` overrides, then the target's own."""
        base = self.presets[self.preset].train
        merged = base.model_copy(update=self.train.model_dump(exclude_none=True))
        if target is not None:
            merged = merged.model_copy(
                update=self.target(target).train.model_dump(exclude_none=True)
            )
        return merged

    def train_config(self, target: str, seed: int) -> TrainConfig:
        """One run's training settings: the target's merged settings and one of its seeds."""
        return TrainConfig(**self.train_settings(target).model_dump(), seed=seed)

    def for_curve(self, rows: int) -> Params:
        """These settings as one learning-curve point sees them: `rows` training rows drawn
        from the same teacher, and the curve's own overrides applied."""
        c = self.curve
        p = self.preprocess
        train_share = 1 - p.test_fraction - (p.valid_fraction if p.protocol == "clean" else 0)
        lines = math.ceil(rows / train_share)
        threshold = p.threshold if c.threshold is None else c.threshold
        merged = {
            key: getattr(self, key).model_copy(update=getattr(c, key).model_dump(exclude_none=True))
            for key in ("model", "train")
        }
        syn = self.data.synthetic.model_copy(update={"rows": lines})
        return self.model_copy(
            update={
                "data": self.data.model_copy(update={"synthetic": syn}),
                "preprocess": p.model_copy(update={"threshold": threshold}),
                **merged,
            }
        )

    def for_teacher(self, name: str) -> Params:
        """These settings with the named teacher drawing the labels, at sweep.rows lines."""
        syn = self.data.synthetic
        update = {"teacher": name, "rows": self.sweep.rows or syn.rows}
        data = self.data.model_copy(update={"synthetic": syn.model_copy(update=update)})
        return self.model_copy(update={"data": data})

    def for_movielens(self) -> Params:
        """These settings with MovieLens-100K as the data (the movielens stage's study),
        under the clean protocol whatever preprocess.protocol says: MovieLens has no zoo
        protocol, and its study is tuned on validation."""
        data = self.data.model_copy(update={"source": "movielens"})
        prep = self.preprocess.model_copy(update={"protocol": "clean", "dense": "max"})
        return self.model_copy(update={"data": data, "preprocess": prep})

    def movielens_models(self) -> list[str]:
        """The models the MovieLens study compares (movielens.models, or the study's)."""
        return list(self.movielens.models or self.models)

    def sweep_models(self) -> list[str]:
        """The models the teacher sweep compares (sweep.models, or the study's)."""
        return list(self.sweep.models or self.models)

    def seeds(self, target: str | None = None) -> list[int]:
        """The seeds every model of the study is trained with (train.seeds)."""
        return list(self.train_settings(target).seeds)

    def tune_seed(self, target: str | None = None) -> int:
        """The seed the search runs on: tune.seed, or the first of train.seeds."""
        return self.seeds(target)[0] if self.tune.seed is None else self.tune.seed

    def grid(self, model: str) -> list[dict[str, Any]]:
        """The points of ``model``'s search, in order: each a {setting: value} mapping."""
        axes = self.tune.grid.get(model, {})
        return [dict(zip(axes, values, strict=True)) for values in product(*axes.values())]

    def with_settings(self, point: dict[str, Any]) -> Params:
        """These params with one grid point's settings as the `model:` / `train:` overrides.

        Validated like params.yaml itself, so a grid value out of range fails here.
        """
        raw = self.model_dump()
        for key, value in point.items():
            raw["model" if key in ModelParams.model_fields else "train"][key] = value
        return Params.model_validate(raw)


@dataclass(frozen=True)
class Run:
    """One training run: the study's settings, a model on a target, one seed, its data and
    its folder.

    The six always travel together, from a stage, the search or the zoo's command down to
    the process (or msrun rank) that trains and the code that scores it; one value with
    named fields instead of six positional arguments every layer had to keep in order.
    """

    params: Params
    model: str
    target: str
    seed: int
    data_dir: Path
    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        self.params.target(self.target)  # an unknown target fails here, naming the known ones

    @property
    def cluster(self) -> TargetParams:
        """The target's settings: device, precision, workers x nodes."""
        return self.params.target(self.target)

    def train_config(self) -> TrainConfig:
        """This run's training settings (the target's merged settings and its seed)."""
        return self.params.train_config(self.target, self.seed)

    def network_config(self, vocab_size: int, field_size: int) -> ModelConfig:
        """This run's network, for data with ``vocab_size`` ids and rows ``field_size`` wide."""
        return self.params.network_config(self.model, self.target, vocab_size, field_size)


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (a typo?)"
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):
        return f"{source}: {key}: {err['ctx']['error']}"  # a check across a section's keys
    value = err.get("input")
    return f"{source}: {key} = {value!r}: {err['msg']}"


CRITEO_NAMES = ("train.txt", "train.txt.gz")


def criteo_file(path: str | Path, source: str = "params.yaml") -> Path:
    """The Criteo text that data.criteo_path names: the file, or train.txt(.gz) in a folder."""
    path = Path(path)
    if path.is_file():
        return path
    for name in CRITEO_NAMES if path.is_dir() else ():
        if (path / name).is_file():
            return path / name
    raise ParamsError(
        f"{source}: data.criteo_path = {str(path)!r}: no Criteo file there; put the Kaggle "
        f"train.txt (or train.txt.gz) in {path if path.is_dir() else 'data/criteo/'} or point "
        "data.criteo_path at it, or set data.source: synthetic"
    )


# Rules about data-parallel ranks, stated once: parse() checks params.yaml with them, and
# the engine checks its own arguments with them (it is also called without params.yaml).
def lazy_adam_problem(lazy_adam: bool, ranks: int) -> str | None:
    """Why ``lazy_adam`` cannot train on ``ranks`` ranks, or None."""
    if lazy_adam and ranks > 1:
        return (
            f"train.lazy_adam is single-process only (its sparse table updates are not "
            f"all-reduced), but the target runs {ranks} ranks; set lazy_adam: false or "
            "workers: 1, nodes: 1"
        )
    return None


def batch_split_problem(batch_size: int, ranks: int) -> str | None:
    """Why the global ``batch_size`` cannot be split over ``ranks`` ranks, or None."""
    if batch_size % ranks:
        return (
            f"batch_size {batch_size} (the global batch) does not split evenly over workers x "
            f"nodes = {ranks} ranks; use a multiple of {ranks}"
        )
    return None


def parse(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; `source` names it in error messages."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None
    if params.preset not in params.presets:
        known = ", ".join(sorted(params.presets)) or "none defined under presets:"
        raise ParamsError(f"{source}: preset = {params.preset!r}: no such preset; allowed: {known}")
    known_models = available()
    model_lists = [("models", params.models), ("curve.models", params.curve.models)]
    model_lists.append(("sweep.models", params.sweep.models or []))
    model_lists.append(("movielens.models", params.movielens.models or []))
    for key, names in model_lists:
        for name in names:
            if name not in known_models:
                raise ParamsError(
                    f"{source}: {key}: {name!r} is not a registered model; "
                    f"allowed: {', '.join(known_models)}"
                )
    if params.curve.enabled:
        params.target(params.curve.target)  # names the targets that exist
        if params.data.source != "synthetic":
            raise ParamsError(
                f"{source}: curve.enabled = true needs data.source: synthetic (each point "
                "draws its own rows from the known teacher); set curve.enabled: false"
            )
    _check_teachers(params, source)
    _check_movielens(params, source)
    _check_tune(params, source, known_models)
    if len(set(params.models)) != len(params.models):
        raise ParamsError(f"{source}: models lists a model twice: {params.models}")
    for name, target in params.targets.items():
        seeds = params.seeds(name)
        if len(set(seeds)) != len(seeds):
            raise ParamsError(f"{source}: train.seeds lists a seed twice: {seeds}")
        if target.device == "CPU" and target.precision == "bf16":
            raise ParamsError(
                f"{source}: targets.{name}.precision = 'bf16': MindSpore 2.10 has no bf16 "
                "matrix multiply on CPU; use fp32 (or fp16) on CPU, bf16 on GPU or Ascend"
            )
        train = params.train_settings(name)
        for problem in (
            lazy_adam_problem(train.lazy_adam, target.world_size),
            batch_split_problem(train.batch_size, target.world_size),
        ):
            if problem:
                raise ParamsError(f"{source}: targets.{name}: {problem}")
    if params.data.source == "criteo":
        criteo_file(params.data.criteo_path, source)
    elif not Path(params.data.criteo_path).exists():
        raise ParamsError(
            f"{source}: data.criteo_path = {params.data.criteo_path!r}: no such file or folder "
            "(DVC tracks it even for synthetic data; the default is data/criteo)"
        )
    return params


def _check_movielens(params: Params, source: str) -> None:
    """MovieLens is tuned on validation: the main pipeline on it needs the clean protocol."""
    if params.data.source == "movielens" and params.preprocess.protocol != "clean":
        raise ParamsError(
            f"{source}: preprocess.protocol = 'zoo': data.source movielens needs the clean "
            "protocol's validation split (the zoo protocol is Criteo's); set protocol: clean"
        )
    models = params.movielens_models()
    if len(set(models)) != len(models):
        raise ParamsError(f"{source}: movielens.models lists a model twice: {models}")
    if params.movielens.enabled:
        params.target(params.movielens.target)  # names the targets that exist


def _check_teachers(params: Params, source: str) -> None:
    """The study's teacher and the sweep's exist; the sweep draws synthetic data only."""
    syn = params.data.synthetic
    for key, names in (
        ("data.synthetic.teacher", [syn.teacher]),
        ("sweep.teachers", params.sweep.teachers),
    ):
        for name in names:
            if name not in syn.teachers:
                raise ParamsError(
                    f"{source}: {key}: {name!r} is not a teacher of data.synthetic.teachers; "
                    f"defined: {', '.join(syn.teachers)}"
                )
    models = params.sweep_models()
    if len(set(models)) != len(models):
        raise ParamsError(f"{source}: sweep.models lists a model twice: {models}")
    if params.sweep.enabled and "deepfm" not in models:
        raise ParamsError(
            f"{source}: sweep.models = {models}: the sweep compares every model with DeepFM; "
            "add deepfm"
        )
    if len(set(params.sweep.teachers)) != len(params.sweep.teachers):
        raise ParamsError(
            f"{source}: sweep.teachers lists a teacher twice: {params.sweep.teachers}"
        )
    if params.sweep.enabled:
        params.target(params.sweep.target)
        if params.data.source != "synthetic":
            raise ParamsError(
                f"{source}: sweep.enabled = true needs data.source: synthetic (each teacher "
                "draws its own rows); set sweep.enabled: false"
            )
        for model in params.sweep_models():
            if model not in params.tune.grid:
                raise ParamsError(
                    f"{source}: sweep.models: {model!r} has no tune.grid entry; give it a "
                    f"grid, or `{model}: {{}}` to run it with the preset's settings"
                )


def _check_tune(params: Params, source: str, known_models: list[str]) -> None:
    """Every grid names a registered model and settings a point may set, with valid values."""
    for model in params.models:
        if model not in params.tune.grid:
            raise ParamsError(
                f"{source}: tune.grid has no entry for {model!r}; give it a grid, or "
                f"`{model}: {{}}` to run it once with the preset's settings"
            )
    for model, axes in params.tune.grid.items():
        where = f"{source}: tune.grid.{model}"
        if model not in known_models:
            raise ParamsError(
                f"{where}: {model!r} is not a registered model; allowed: {', '.join(known_models)}"
            )
        for key, values in axes.items():
            if key not in GRID_KEYS:
                raise ParamsError(
                    f"{where}.{key}: not a setting a grid can vary; allowed: {', '.join(GRID_KEYS)}"
                )
            for name, target in params.targets.items():
                if getattr(target.train, key, None) is not None:
                    raise ParamsError(
                        f"{where}.{key}: targets.{name}.train.{key} also sets it and would "
                        "override every grid point; remove one of the two"
                    )
            if len(set(map(repr, values))) != len(values):
                raise ParamsError(f"{where}.{key}: lists a value twice: {values}")
            for value in values:
                try:
                    params.with_settings({key: value})
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ParamsError(f"{where}.{key} = {value!r}: {msg}") from None


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
