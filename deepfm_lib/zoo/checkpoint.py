"""Loading the MindSpore model zoo's DeepFM checkpoints (and this project's) into ``DeepFM``.

The zoo's train.py saves ``TrainStepWrap(NetWithLossClass(DeepFMModel))`` through
``ModelCheckpoint`` (files like ``deepfm-5_2582.ckpt``). Both wrappers are built with
``auto_prefix=False``, so no ``network.`` prefix is added; but ``DeepFMModel`` creates its
tables as ``Parameter(..., name="W_l2")`` / ``name="V_l2"`` and MindSpore keeps an explicit
name when the Parameter is assigned to ``self.fm_w`` (checked with MindSpore 2.10; 1.x
renames only default-named Parameters too). A zoo checkpoint therefore holds:

===============================  =================  ===========================================
zoo name                         zoo shape          here
===============================  =================  ===========================================
``W_l2``                         (vocab, 1)         ``fm_w`` (vocab, 1)
``V_l2``                         (vocab, emb)       ``embedding_table`` (vocab, emb)
``dense_layer_<i>.weight``       (in, out)          ``dense_layer_<i>.weight`` (in, out), as is
``dense_layer_<i>.bias``         (out,)             ``dense_layer_<i>.bias`` (out,)
``moment1.*``, ``moment2.*``     like the weights   dropped (Adam's moments)
``beta1_power``, ``beta2_power``,                   dropped (Adam's step state)
``learning_rate``, ``global_step``
===============================  =================  ===========================================

The zoo's ``DenseLayer`` multiplies ``x @ W`` with ``MatMul(transpose_b=False)``, so its
weights are stored (in, out), the same layout as here: nothing is transposed for a zoo
checkpoint. A checkpoint written by a variant built on ``nn.Dense`` stores (out, in); the
layout is told apart by the shapes themselves (the layers must chain and the last one has
one output), and such weights are transposed. Also accepted: this project's own names
(``fm_w``, ``embedding_table``; ``model.ckpt``, ``best.ckpt`` and training checkpoints,
whose Adam state and position entries are dropped the same way) and any number of leading
``network.`` prefixes (a checkpoint saved through a wrapper built with ``auto_prefix=True``).

Anything else that looks like a network weight but has no place in the network (an extra
dense layer, a table of another size) is refused with one message naming what differs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfm_lib.config import ModelConfig
from deepfm_lib.data.criteo import N_FIELDS  # the zoo trains on Criteo only
from deepfm_lib.models.deepfm import DeepFM

__all__ = [
    "CheckpointMismatchError",
    "ZooWeights",
    "read_weights",
    "infer_config",
    "load_network",
]

log = logging.getLogger(__name__)

RENAMES = {"W_l2": "fm_w", "V_l2": "embedding_table"}
_TABLES = ("fm_w", "embedding_table")
_DENSE_RE = re.compile(r"^dense_layer_(\d+)\.(weight|bias)$")
# Optimiser state and bookkeeping a training checkpoint may carry besides the weights:
# the zoo's Adam, MindSpore's ModelCheckpoint extras, and this project's resume position.
_STATE_PREFIXES = ("moment1.", "moment2.", "vhat.", "accum.")
_STATE_NAMES = {
    "beta1_power",
    "beta2_power",
    "learning_rate",
    "global_step",
    "epoch_num",
    "step_num",
    "scale_sense",
    "current_iterator_step",
    "last_overflow_iterator_step",
    "pos_epoch",
    "pos_batch_in_epoch",
    "pos_global_step",
    "epoch",
}


class CheckpointMismatchError(ValueError):
    """The checkpoint is unreadable or its weights do not fit the network asked for."""


def network_name(name: str) -> str | None:
    """This project's name for a checkpoint entry, or None for optimiser state/bookkeeping."""
    while name.startswith("network."):
        name = name[len("network.") :]
    if name in _STATE_NAMES or name.startswith(_STATE_PREFIXES):
        return None
    return RENAMES.get(name, name)


@dataclass(frozen=True)
class ZooWeights:
    """A checkpoint's network weights under this project's names, in this project's layout."""

    path: Path
    arrays: dict[str, np.ndarray]
    transposed: bool  # True when the dense weights were stored (out, in) and were transposed
    source_names: dict[str, str]  # our name -> the name in the file

    @property
    def n_dense(self) -> int:
        return sum(1 for n in self.arrays if n.endswith(".weight"))


def _fail(path: Path, why: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(f"{path}: {why}")


def _load_raw(path: Path) -> dict[str, np.ndarray]:
    import mindspore as ms

    if not path.is_file():
        raise _fail(path, "no such checkpoint file")
    try:
        # choice_func skips Adam's moments (twice the weights' size) without reading them.
        params = ms.load_checkpoint(str(path), choice_func=lambda n: network_name(n) is not None)
    except (ValueError, RuntimeError, TypeError, OSError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise _fail(path, f"not a readable MindSpore checkpoint ({first.strip()})") from None
    return {name: p.asnumpy() for name, p in params.items()}


def _orient(path: Path, dense: dict[int, dict[str, np.ndarray]]) -> bool:
    """True if the dense weights are stored (out, in) and must be transposed.

    Tried both ways: a layout fits when consecutive layers chain, every bias has the layer's
    output width and the last layer has one output. The zoo's (in, out) wins a tie.
    """
    n = len(dense)

    def fits(transpose: bool) -> bool:
        prev_out = None
        for i in range(1, n + 1):
            w, b = dense[i]["weight"], dense[i]["bias"]
            if w.ndim != 2 or b.ndim != 1:
                return False
            d_in, d_out = (w.shape[1], w.shape[0]) if transpose else w.shape
            if b.shape[0] != d_out or (prev_out is not None and d_in != prev_out):
                return False
            prev_out = d_out
        return prev_out == 1

    if fits(False):
        return False
    if fits(True):
        return True
    shapes = ", ".join(
        f"dense_layer_{i}: weight {tuple(dense[i]['weight'].shape)} bias "
        f"{tuple(dense[i]['bias'].shape)}"
        for i in range(1, n + 1)
    )
    raise _fail(path, f"the dense layers do not form a DeepFM MLP ending in one unit ({shapes})")


def read_weights(path: str | Path) -> ZooWeights:
    """The network weights of a zoo (or this project's) checkpoint, renamed and re-laid-out."""
    path = Path(path)
    raw = _load_raw(path)
    arrays: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in raw.items():
        ours = network_name(name)
        if ours is None:
            continue
        if ours not in _TABLES and not _DENSE_RE.match(ours):
            ignored.append(name)
            continue
        if ours in arrays:
            raise _fail(path, f"holds both {source[ours]!r} and {name!r} for {ours!r}")
        arrays[ours] = np.asarray(value, dtype=np.float32)
        source[ours] = name
    if ignored:
        log.info("%s: ignoring entries that are not DeepFM weights: %s", path, ignored[:10])
    missing = [t for t in _TABLES if t not in arrays]
    if missing:
        wanted = " / ".join(f"{z!r} or {o!r}" for z, o in RENAMES.items() if o in missing)
        raise _fail(path, f"not a DeepFM checkpoint: no {wanted} among {sorted(raw)[:8]}")
    dense: dict[int, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        m = _DENSE_RE.match(name)
        if m:
            dense.setdefault(int(m.group(1)), {})[m.group(2)] = value
    numbers = sorted(dense)
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        raise _fail(path, f"dense layers numbered {numbers}; expected dense_layer_1..N")
    for i in numbers:
        if set(dense[i]) != {"weight", "bias"}:
            raise _fail(
                path, f"dense_layer_{i} lacks its {'weight' if 'bias' in dense[i] else 'bias'}"
            )
    transpose = _orient(path, dense)
    if transpose:
        for i in numbers:
            arrays[f"dense_layer_{i}.weight"] = np.ascontiguousarray(dense[i]["weight"].T)
    return ZooWeights(path=path, arrays=arrays, transposed=transpose, source_names=source)


def infer_config(
    weights: ZooWeights, *, field_size: int = N_FIELDS, precision: str = "fp32"
) -> ModelConfig:
    """The ModelConfig the checkpoint's shapes describe (vocab, embedding, MLP widths)."""
    a = weights.arrays
    table, fm_w = a["embedding_table"], a["fm_w"]
    if table.ndim != 2 or fm_w.shape != (table.shape[0], 1):
        raise _fail(
            weights.path,
            f"embedding_table {tuple(table.shape)} and fm_w {tuple(fm_w.shape)} do not "
            "describe one vocabulary ((vocab, emb) and (vocab, 1))",
        )
    vocab, emb = table.shape
    first_in = a["dense_layer_1.weight"].shape[0]
    if first_in != field_size * emb:
        raise _fail(
            weights.path,
            f"dense_layer_1 takes {first_in} inputs, but {field_size} fields x embedding "
            f"{emb} = {field_size * emb}",
        )
    widths = [a[f"dense_layer_{i}.weight"].shape[1] for i in range(1, weights.n_dense)]
    if not widths:
        raise _fail(weights.path, "has a single dense layer; DeepFM needs at least one hidden one")
    return ModelConfig(
        vocab_size=int(vocab),
        field_size=field_size,
        emb_dim=int(emb),
        deep_layers=tuple(int(w) for w in widths),
        precision=precision,
    )


def _describe(cfg: ModelConfig) -> str:
    layers = "-".join(str(d) for d in cfg.deep_layers)
    return f"vocab {cfg.vocab_size}, emb_dim {cfg.emb_dim}, deep_layers {layers}"


def load_network(
    source: str | Path | ZooWeights, model_cfg: ModelConfig | None = None, **infer
) -> DeepFM:
    """A DeepFM in inference mode holding the checkpoint's weights.

    ``source`` is a checkpoint path or what ``read_weights`` returned for one. With
    ``model_cfg`` the checkpoint must match it exactly; without, the network is built from
    the checkpoint's shapes (``infer`` goes to ``infer_config``).
    """
    import mindspore as ms

    weights = source if isinstance(source, ZooWeights) else read_weights(source)
    inferred = infer_config(weights, **infer) if model_cfg is None else None
    cfg = model_cfg or inferred
    net = DeepFM(cfg)
    wanted = {p.name: tuple(p.shape) for p in net.get_parameters()}
    have = {n: tuple(v.shape) for n, v in weights.arrays.items()}
    problems = [f"{n} missing" for n in wanted if n not in have]
    problems += [f"{n} has no place in the network" for n in have if n not in wanted]
    problems += [
        f"{n} is {have[n]} but the network needs {shape}"
        for n, shape in wanted.items()
        if n in have and have[n] != shape
    ]
    if problems:
        try:
            found = _describe(infer_config(weights, field_size=cfg.field_size))
        except CheckpointMismatchError:
            found = "shapes that describe no DeepFM"
        raise _fail(
            weights.path,
            f"does not match the network ({_describe(cfg)}); the checkpoint holds {found}: "
            + "; ".join(problems[:4])
            + ("; ..." if len(problems) > 4 else ""),
        )
    params = {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in weights.arrays.items()}
    ms.load_param_into_net(net, params, strict_load=True)
    net.set_train(False)
    log.info(
        "loaded %s (%s%s)",
        weights.path,
        _describe(cfg),
        "; dense weights transposed from (out, in)" if weights.transposed else "",
    )
    return net
