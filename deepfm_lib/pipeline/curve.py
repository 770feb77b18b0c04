"""The learning curve: test AUC against training rows, beside the teacher's ceiling.

The study's default data (270,000 training rows) leaves DeepFM about 0.07 AUC below the
teacher that drew its labels. A model cannot beat the teacher on rows it has never seen,
but what keeps it from closing the gap? This stage measures it instead of guessing: every
point draws its own synthetic data from the same teacher (data.synthetic's seed and scale;
the generator is prefix-stable, so a point's rows are the first rows of any larger point)
and runs the study's own preprocess, train and scoring on it, for one seed. Beside each
AUC it records the teacher's AUC and its parts on the same test rows, the vocabulary and
the share of test values folded into a field's out-of-vocabulary id (ids 13..38), which
is what the frequency threshold costs.

Opt-in (curve.enabled in params.yaml): the default points take about 10 minutes on a
2-core laptop. Disabled, the stage writes ``{"enabled": false}`` and nothing else.

Command line: ``python -m deepfm_lib.pipeline.curve PARAMS_FILE METRICS_JSON``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from deepfm_lib import config
from deepfm_lib.config import Params, Run
from deepfm_lib.io import read_json, write_json
from deepfm_lib.pipeline import stages

log = logging.getLogger(__name__)


def point_key(model: str, rows: int) -> str:
    """A point's key in curve.json (flat, so `dvc metrics diff` lists it)."""
    return f"{model}@{rows}"


def oov_share(data_dir: Path, split: str = "test") -> float:
    """The share of `split`'s categorical values mapped to their field's OOV id."""
    import numpy as np

    from deepfm_lib.data.dataset import iter_batches, layout

    shape = layout(data_dir)  # categorical positions follow the weighted ones
    folded = total = 0
    for ids, _, _ in iter_batches(data_dir, split, 10_000, shuffle=False, seed=0):
        cat = np.asarray(ids)[:, shape.weighted :]
        folded += int(np.count_nonzero(cat < shape.reserved))
        total += cat.size
    return folded / total


def measure_point(params: Params, rows: int, work: Path) -> dict[str, dict[str, Any]]:
    """Every curve model at `rows` training rows: draw, preprocess, train one seed, score."""
    c = params.curve
    point = params.for_curve(rows)
    raw, data = work / f"raw{rows}", work / f"processed{rows}"
    start = time.perf_counter()
    stages.make_data(point, raw)
    stats = stages.preprocess(point, raw, data, work / f"preprocess{rows}.json")
    data_seconds = time.perf_counter() - start
    common = {
        "rows": rows,
        "train_rows": stats["splits"]["train"]["rows"],
        "test_rows": stats["splits"]["test"]["rows"],
        "vocab_size": stats["vocab_size"],
        "threshold": point.preprocess.threshold,
        "test_oov_share": round(oov_share(data), 6),
        "oracle_auc": stats.get("oracle_auc"),
        **{f"oracle_{k}": v for k, v in (stats.get("oracle_parts") or {}).items()},
        "data_seconds": round(data_seconds, 1),
    }
    out = {}
    for model in c.models:
        key, run_dir = point_key(model, rows), work / f"{model}{rows}"
        run = Run(point, model, c.target, c.seed, data, run_dir)
        stages.train_run(run)
        summary = read_json(run_dir / "train_summary.json")
        _, _, _, metrics = stages.score_run(run)
        out[key] = {
            "model": model,
            **common,
            "auc": metrics["auc"],
            "logloss": metrics["logloss"],
            "epochs": summary.get("epochs"),
            "parameters": summary.get("parameters"),
            "train_seconds": summary.get("wall_s"),
        }
        teacher = common["oracle_auc"] or float("nan")
        log.info("curve %s: AUC %.4f (teacher %.4f)", key, metrics["auc"], teacher)
    return out


def learning_curve(params: Params, metrics_path: str | Path) -> dict[str, Any]:
    """Run every point of curve.rows (or nothing, when the curve is off); write the JSON."""
    c = params.curve
    if not c.enabled:
        result: dict[str, Any] = {"enabled": False}
        write_json(metrics_path, result)
        return result
    from deepfm_lib.engine.device import use_device

    use_device(params.target(c.target).device)
    points: dict[str, dict[str, Any]] = {}
    # Each point's data and runs are scratch: only the figures are kept (a point at 3M rows
    # holds ~0.7 GB of text); the folder goes even when a point fails.
    for rows in sorted(c.rows):
        with tempfile.TemporaryDirectory(prefix="deepfm-curve-") as tmp:
            points.update(measure_point(params, rows, Path(tmp)))
    first = params.for_curve(min(c.rows))
    result = {
        "enabled": True,
        "seed": c.seed,
        "target": c.target,
        "models": list(c.models),
        "epochs": first.train_settings(c.target).epochs,
        "data_seed": params.data.synthetic.seed,
        "scale": params.data.synthetic.scale,
        "protocol": params.preprocess.protocol,
        "points": points,
    }
    write_json(metrics_path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.pipeline.curve")
    parser.add_argument("params_file", type=Path)
    parser.add_argument("metrics_path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    learning_curve(config.load(args.params_file), args.metrics_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
