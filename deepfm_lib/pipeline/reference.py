"""An independent baseline: scikit-learn's logistic regression on the study's own splits.

The study's `lr` is a MindSpore network trained with Adam for a few epochs; whether it
reached what logistic regression can do on these features is a question for a different
implementation. Here each row is the one-hot matrix of its ids weighted by their values,
exactly what `lr` sees, fitted to convergence by lbfgs for each C of `reference.lr_C`; C
is chosen on the evaluation split and the test split is scored once, as the study's own
models are. The report puts it beside `lr`: a gap means `lr` was not tuned or trained far
enough, not that LR is weak.

Command line: ``python -m deepfm_lib.pipeline.reference PARAMS DATA_DIR METRICS_JSON``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepfm_lib import config
from deepfm_lib.config import Params
from deepfm_lib.io import read_json, write_json

log = logging.getLogger(__name__)


def one_hot(data_dir: str | Path, split: str):
    """A split as (CSR matrix rows x vocabulary holding each id's weight, labels)."""
    import scipy.sparse as sp

    from deepfm_lib.data.dataset import iter_batches

    vocab = read_json(Path(data_dir) / "stats.json")["vocab_size"]
    parts = list(iter_batches(data_dir, split, 50_000, shuffle=False, seed=0))
    ids = np.concatenate([np.asarray(p[0]) for p in parts])
    weights = np.concatenate([np.asarray(p[1]) for p in parts])
    labels = np.concatenate([np.asarray(p[2]).ravel() for p in parts])
    rows, fields = ids.shape
    matrix = sp.csr_matrix(
        (weights.ravel(), ids.ravel(), np.arange(0, rows * fields + 1, fields)),
        shape=(rows, vocab),
    )
    matrix.sum_duplicates()
    return matrix, labels


def sklearn_lr(data_dir: str | Path, cs: list[float]) -> dict[str, Any]:
    """Fit LogisticRegression (lbfgs) per C on train; choose C on the evaluation split by
    AUC; score the chosen fit once on test. Figures as binary_metrics computes them."""
    from sklearn.linear_model import LogisticRegression

    from deepfm_lib.engine.inference import binary_metrics

    split = read_json(Path(data_dir) / "stats.json")["eval_split"]
    x_train, y_train = one_hot(data_dir, "train")
    x_eval, y_eval = one_hot(data_dir, split)
    fits, tried = {}, {}
    for c in cs:
        start = time.perf_counter()
        fit = LogisticRegression(C=c, solver="lbfgs", max_iter=2000).fit(x_train, y_train)
        probs = fit.predict_proba(x_eval)[:, 1]
        fits[c] = fit
        tried[f"C={c:g}"] = {
            "C": c,
            "auc": binary_metrics(y_eval, probs)["auc"],
            "iterations": int(fit.n_iter_[0]),
            "seconds": round(time.perf_counter() - start, 2),
        }
        log.info("scikit-learn LR C=%g: %s AUC %.5f", c, split, tried[f"C={c:g}"]["auc"])
    best = max(cs, key=lambda c: (tried[f"C={c:g}"]["auc"], -cs.index(c)))
    x_test, y_test = one_hot(data_dir, "test")
    test = binary_metrics(y_test, fits[best].predict_proba(x_test)[:, 1])
    return {
        "model": "scikit-learn LogisticRegression (lbfgs)",
        "split": "test",
        "chosen_on": split,
        "C": best,
        "auc": test["auc"],
        "logloss": test["logloss"],
        "rows": int(y_test.size),
        "tried": tried,
    }


def run(params: Params, data_dir: str | Path, metrics_path: str | Path) -> dict[str, Any]:
    """The reference stage: the fit, or why it was skipped (switched off, too many rows)."""
    ref = params.reference
    train_rows = read_json(Path(data_dir) / "stats.json")["splits"]["train"]["rows"]
    if not ref.enabled:
        out: dict[str, Any] = {"enabled": False}
    elif train_rows > ref.max_rows:
        out = {
            "enabled": True,
            "skipped": f"{train_rows:,} training rows > reference.max_rows {ref.max_rows:,}",
        }
    else:
        out = {"enabled": True, **sklearn_lr(data_dir, list(ref.lr_C))}
    write_json(metrics_path, out)
    return out


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params")
    parser.add_argument("data_dir")
    parser.add_argument("metrics")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(config.load(args.params), args.data_dir, args.metrics)


if __name__ == "__main__":
    _main()
