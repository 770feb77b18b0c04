"""Global metrics over a whole split, and inference with a trained model.

The zoo's AUCMetric gathers every prediction and computes ONE roc_auc_score at the end; an
average of per-batch AUCs would be a different (and batch-size dependent) number. Everything
here works on all predictions at once for the same reason.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from sklearn.metrics import log_loss, roc_auc_score
from tqdm import tqdm

from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.cpu_runtime import hint_kernels, keep_on_actor_thread
from deepfm_lib.io import atomic_path
from deepfm_lib.models import build
from deepfm_lib.models.base import CTRModel

__all__ = [
    "Batch",
    "load_model",
    "predict",
    "binary_metrics",
    "pad_batch",
    "export_mindir",
    "load_mindir",
]

log = logging.getLogger(__name__)

# ids int32 (b, F), weights float32 (b, F), labels float32 (b, 1)
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def pad_batch(batch: Batch, size: int) -> tuple[Batch, np.ndarray, int]:
    """Pad a batch to ``size`` rows with zero rows so graph mode keeps one compiled shape.

    Returns the padded batch, a (size, 1) float32 row mask (1 = real row) and the real row
    count. Padding rows use id 0 and weight 0; the mask keeps them out of losses and metrics.
    """
    ids, weights, labels = batch
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.float32).reshape(-1, 1)
    n = ids.shape[0]
    if ids.ndim != 2 or weights.shape != ids.shape or labels.shape[0] != n:
        raise ValueError(
            f"Malformed batch: ids {ids.shape}, weights {weights.shape}, labels {labels.shape}; "
            "expected (b, F), (b, F), (b, 1)"
        )
    if n > size:
        raise ValueError(f"Batch of {n} rows is larger than the batch size {size}")
    mask = np.ones((size, 1), dtype=np.float32)
    if n < size:
        pad = size - n
        ids = np.concatenate([ids, np.zeros((pad, ids.shape[1]), np.int32)])
        weights = np.concatenate([weights, np.zeros((pad, weights.shape[1]), np.float32)])
        labels = np.concatenate([labels, np.zeros((pad, 1), np.float32)])
        mask[n:] = 0.0
    return (ids, weights, labels), mask, n


class _Predictor(nn.Cell):
    def __init__(self, network: CTRModel):
        super().__init__(auto_prefix=False)
        self.network = network
        self.hint_kernels = hint_kernels()  # see deepfm_lib.engine.cpu_runtime

    def construct(self, ids: Tensor, weights: Tensor) -> Tensor:
        return keep_on_actor_thread(ops.sigmoid(self.network(ids, weights)), self.hint_kernels)


# One compiled predictor per network, so per-epoch evaluation does not recompile.
_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predictor(net: CTRModel) -> _Predictor:
    pred = _PREDICTORS.get(net)
    if pred is None:
        pred = _Predictor(net)
        _PREDICTORS[net] = pred
    return pred


def load_model(model_cfg: ModelConfig, ckpt_path: Path) -> CTRModel:
    """Build the network and fill it from a checkpoint; every weight must be present.

    Optimiser state and position entries (training checkpoints) are ignored, so both
    ``model.ckpt`` and a training checkpoint load.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {ckpt_path}")
    net = build(model_cfg)
    params = ms.load_checkpoint(str(ckpt_path))
    wanted = {p.name: p for p in net.get_parameters()}
    missing = [n for n in wanted if n not in params]
    if missing:
        raise ValueError(f"{ckpt_path} lacks weights {missing[:5]} for this ModelConfig")
    bad = [
        f"{n}: checkpoint {tuple(params[n].shape)} vs model {tuple(p.shape)}"
        for n, p in wanted.items()
        if tuple(params[n].shape) != tuple(p.shape)
    ]
    if bad:
        raise ValueError(f"{ckpt_path} does not match the ModelConfig: {'; '.join(bad[:5])}")
    ms.load_param_into_net(net, {n: params[n] for n in wanted}, strict_load=True)
    net.set_train(False)
    return net


def predict(
    net: CTRModel, batches: Iterable[Batch], *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities (both float64, flat) over all batches, in order.

    Batches are padded to the size of the first one so only one graph is compiled.
    """
    pred = _predictor(net)
    was_training = net.training
    net.set_train(False)
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    size = None
    rows = 0
    start = time.perf_counter()
    bar = tqdm(desc="predict", unit="batch", disable=not progress, leave=False)
    try:
        for batch in batches:
            n = int(np.shape(batch[0])[0])
            size = n if size is None or n > size else size
            (ids, weights, y), _, n = pad_batch(batch, size)
            p = pred(Tensor(ids), Tensor(weights)).asnumpy()[:n, 0]
            labels.append(y[:n, 0].astype(np.float64))
            probs.append(p.astype(np.float64))
            rows += n
            bar.update(1)
            bar.set_postfix(samples_per_s=f"{rows / max(time.perf_counter() - start, 1e-9):.0f}")
    finally:
        bar.close()
        net.set_train(was_training)
    if not labels:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(labels), np.concatenate(probs)


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """ONE global AUC and log loss over all predictions, plus calibration at a glance.

    accuracy counts a prediction as positive when prob > 0.5. AUC is NaN (with a warning)
    when only one class is present, where it is undefined.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probs ({p.size}) differ in length")
    if y.size == 0:
        raise ValueError("binary_metrics needs at least one prediction")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf; the model diverged")
    if np.unique(y).size < 2:
        log.warning("Only one class among %d labels: AUC is undefined (NaN)", y.size)
        auc = math.nan
    else:
        auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "logloss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0.0, 1.0])),
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "mean_prediction": float(p.mean()),
        "observed_ctr": float(y.mean()),
        "rows": int(y.size),
    }


def score(
    net: CTRModel, batches: Iterable[Batch], *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels, probabilities and metrics over a whole split, with inference throughput.

    The one scoring path of the evaluate stage, the zoo's eval command and the notebooks.
    Throughput is timed after one warm-up batch: compiling the predictor's graph on its
    first call takes ~1.5 s on CPU, longer than scoring the default 40,000 test rows. Reading
    the batches is timed; the warm-up's predictions are scored again and then used.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is not None:
        predict(net, [first])
    start = time.perf_counter()
    labels, probs = predict(
        net, itertools.chain([] if first is None else [first], batches), progress=progress
    )
    seconds = time.perf_counter() - start
    metrics = binary_metrics(labels, probs)
    metrics["eval_time_s"] = round(seconds, 3)
    metrics["inference_samples_per_s"] = round(len(labels) / max(seconds, 1e-9), 1)
    return labels, probs, metrics


def export_mindir(net: CTRModel, path: str | Path) -> Path:
    """Export probabilities from (ids, weights) to MindIR, with a free batch dimension.

    MindIR runs without this library (MindSpore Lite, Ascend 310 serving), which is how the
    zoo ships its model; the file is written under a temporary name and renamed.
    """
    path = Path(path)
    if path.suffix != ".mindir":
        raise ValueError(f"{path}: a MindIR file name must end in .mindir")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = net.config.field_size
    ids = Tensor(shape=[None, fields], dtype=ms.int32)
    weights = Tensor(shape=[None, fields], dtype=ms.float32)
    was_training = net.training
    net.set_train(False)
    try:
        with atomic_path(path, suffix=".mindir") as tmp:
            stem = tmp.with_suffix("")  # ms.export appends .mindir to the name it is given
            ms.export(_Predictor(net), ids, weights, file_name=str(stem), file_format="MINDIR")
    finally:
        net.set_train(was_training)
    return path


def load_mindir(path: str | Path) -> nn.GraphCell:
    """A callable (ids, weights) -> probabilities from an exported MindIR file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MindIR file not found: {path}")
    return nn.GraphCell(ms.load(str(path)))
