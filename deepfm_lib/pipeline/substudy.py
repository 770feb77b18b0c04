"""The study's protocol on one data set, inside one folder, for stages that run it again.

The main pipeline spreads the study over DVC stages (data, preprocess, tune@, train@,
evaluate@); the teacher sweep and the MovieLens study run the same steps on other data in
one stage each. This is those steps once: the data, preprocessing, scikit-learn's LR,
every model tuned on the evaluation split (tune.grid), every seed trained with the chosen
settings, test scored once, and the main table's statistics against DeepFM (paired
differences over the seeds, DeLong per seed). Runs resume after a kill like the study's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from deepfm_lib.config import Params
from deepfm_lib.pipeline import reference, stages, tuning


def run(point: Params, folder: Path, models: list[str], target: str) -> dict[str, Any]:
    """The study on ``point``'s data in ``folder``; the figures the report and DVC read."""
    from deepfm_lib.pipeline import report  # figures' imports (seaborn) only when it runs

    start = time.perf_counter()
    raw, data = folder / "raw", folder / "processed"
    stages.make_data(point, raw)
    stats = stages.preprocess(point, raw, data, folder / "preprocess.json")
    ref = (
        reference.run(point, data, folder / "reference_lr.json") if point.reference.enabled else {}
    )
    results: dict[str, Any] = {}
    for model in models:
        run = stages.run_name(model, target)
        tune_path = folder / "tune" / f"{run}.json"
        chosen = tuning.tune(
            point, model, target, data, folder / "tune" / run, tune_path,
            folder / "tune_plots" / run,
        )  # fmt: skip
        tuning.train(
            point, model, target, data, folder / "runs" / run, folder / "train" / run,
            tune_path, folder / "tune" / run,
        )  # fmt: skip
        metrics = stages.evaluate(
            tuning.tuned(point, chosen), model, target, data, folder / "runs" / run,
            folder / "metrics" / f"{run}.json", folder / "predictions" / f"{run}.npz",
        )  # fmt: skip
        results[model] = {
            "auc": metrics["auc"],
            "auc_sd": metrics.get("auc_sd"),
            "logloss": metrics["logloss"],
            "logloss_sd": metrics.get("logloss_sd"),
            "chosen": chosen["chosen"]["point"],
            "settings": chosen["chosen"]["settings"],  # the chosen point's values
            "epochs": [r["checkpoint_epoch"] for r in metrics["runs"].values()],
            "runs": {
                seed: {k: r.get(k) for k in ("auc", "logloss", "checkpoint_epoch", "epochs")}
                for seed, r in metrics["runs"].items()
            },
        }
    table = report.order(
        report.load_study(folder / "metrics", folder / "train", folder / "predictions"),
        models,
        [target],
    )
    compared = report.comparisons(table, n_resamples=200)
    keys = ["diff_mean", "diff_sd", "diff_ci95", "delong_p_max", "real"]
    # DeepFM's own row compares with nothing (NaN): dropped; DeepFM alone compares nothing.
    if "real" in compared:
        compared = compared.dropna(subset=["real"]).set_index("model")
    else:  # no DeepFM among the models, or DeepFM alone: nothing to compare
        compared = pd.DataFrame(columns=keys)
    return {
        "rows": {split: s["rows"] for split, s in stats["splits"].items()},
        "positive_rate": {split: s["positive_rate"] for split, s in stats["splits"].items()},
        "tuned_on": stats["eval_split"],  # validation; test under the zoo protocol
        "vocab_size": stats["vocab_size"],
        "fields": stats["data"]["width"],
        "oracle_auc": stats.get("oracle_auc"),
        "oracle_parts": stats.get("oracle_parts"),
        "reference_lr_auc": ref.get("auc"),
        "order": list(models),  # the JSON's keys are sorted; this is the models' order
        "models": results,
        "deepfm_minus_model": compared.reindex(columns=keys).to_dict("index"),
        "seconds": round(time.perf_counter() - start, 1),
    }
